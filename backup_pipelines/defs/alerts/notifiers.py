"""Where alerts go: a webhook (JSON, optional HMAC signature), Slack (dagster-slack), email
(SMTP with STARTTLS). Secrets are `${VAR}` in the configuration, expanded when sending, and
never part of an error message."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from typing import Any, Protocol

from dagster_slack import SlackResource

from backup_pipelines.core.common.config import (
    AlertsConfig,
    EmailConfig,
    SlackConfig,
    WebhookConfig,
    expand_env,
)

SIGNATURE_HEADER = "X-Backup-Pipelines-Signature"
TIMEOUT_SECONDS = 10


class NotifierError(RuntimeError):
    """A notifier could not deliver; the message names it and the cause, never a secret."""


class Notifier(Protocol):
    name: str

    def send(self, message: dict[str, Any]) -> None: ...


def message_text(message: dict[str, Any]) -> str:
    head = "RECOVERED" if message["kind"] == "recovered" else "PROBLEM"
    lines = [f"[backup_pipelines] {head}: {message['title']}"]
    if message.get("details"):
        lines.append(message["details"])
    lines.append(message["link"])
    return "\n".join(lines)


class WebhookNotifier:
    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def send(self, message: dict[str, Any]) -> None:
        url = expand_env(self.config.url, "alerts.webhook.url")
        body = json.dumps(message, sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.secret:
            secret = expand_env(self.config.secret, "alerts.webhook.secret").encode()
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        where = urllib.parse.urlsplit(url).netloc  # the path may hold a token
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise NotifierError(f"webhook at {where} answered HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise NotifierError(f"webhook at {where} unreachable: {reason}") from None


class SlackNotifier:
    name = "slack"

    def __init__(self, config: SlackConfig) -> None:
        self.config = config

    def send(self, message: dict[str, Any]) -> None:
        token = expand_env(self.config.token, "alerts.slack.token")
        client = SlackResource(token=token).get_client()
        if self.config.base_url:
            client.base_url = self.config.base_url
        try:
            client.chat_postMessage(channel=self.config.channel, text=message_text(message))
        except Exception as error:  # slack_sdk raises many types; none may escape a sensor
            text = str(error).replace(token, "***")
            raise NotifierError(f"slack: {type(error).__name__}: {text[:300]}") from None


class EmailNotifier:
    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    def send(self, message: dict[str, Any]) -> None:
        config = self.config
        mail = EmailMessage()
        mail["Subject"] = message_text(message).splitlines()[0]
        mail["From"], mail["To"] = config.sender, ", ".join(config.to)
        mail.set_content(message_text(message))
        try:
            with smtplib.SMTP(config.host, config.port, timeout=TIMEOUT_SECONDS) as smtp:
                if config.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=config.ca_file))
                if config.username:
                    password = expand_env(config.password or "", "alerts.email.password")
                    smtp.login(expand_env(config.username, "alerts.email.username"), password)
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as error:
            raise NotifierError(
                f"email via {config.host}:{config.port}: {type(error).__name__}: {error}"
            ) from None


def notifiers_from_config(config: AlertsConfig) -> list[Notifier]:
    notifiers: list[Notifier] = []
    if config.webhook:
        notifiers.append(WebhookNotifier(config.webhook))
    if config.slack:
        notifiers.append(SlackNotifier(config.slack))
    if config.email:
        notifiers.append(EmailNotifier(config.email))
    return notifiers
