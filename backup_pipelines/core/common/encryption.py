"""Client-side encryption of backups with age (https://age-encryption.org), off by default.

The `age` program encrypts the compressed dump stream to an X25519 recipient before it leaves
the process (ChaCha20-Poly1305 in 64 KiB authenticated chunks, so memory stays constant and a
truncated or altered file fails to decrypt). Reading decrypts the same way. The private key
(an age identity) comes from an environment variable or is unwrapped with AWS KMS, and reaches
`age` through an inherited pipe, never argv or a file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from backup_pipelines.core.common.config import EncryptionConfig, expand_env
from backup_pipelines.core.common.streams import Compression, decompress_command

AGE = "age"
ENCRYPTION_METHOD = "age"

Stages = list[tuple[str, list[str]]]


class EncryptionError(RuntimeError):
    """The key cannot be loaded or does not fit the archive; the message says which and why."""


class Encoded(Protocol):
    """What a backup's manifest says about how its object was encoded (compressed, encrypted to
    which recipient) and what it is (`subject`, `partition`: named in every refusal)."""

    @property
    def subject(self) -> str: ...
    @property
    def partition(self) -> str: ...
    @property
    def compression(self) -> Compression: ...
    @property
    def encryption(self) -> str | None: ...
    @property
    def encryption_recipient(self) -> str | None: ...


@dataclass(frozen=True)
class ArchiveKey:
    recipient: str  # public: new backups are encrypted to it
    identity: str = field(repr=False)  # secret: reads them back
    # Keys used before a rotation, kept to read the backups encrypted to them.
    previous: tuple[ArchiveKey, ...] = ()

    def encrypt_command(self) -> list[str]:
        return [AGE, "--encrypt", "--recipient", self.recipient]

    @property
    def readable_recipients(self) -> list[str]:
        return [self.recipient, *(key.recipient for key in self.previous)]

    def identity_file(self) -> bytes:
        """Every identity, one per line: age tries each against an archive's recipient."""
        return "".join(f"{key.identity}\n" for key in (self, *self.previous)).encode()


def key_from_identity(identity: str, setting: str) -> ArchiveKey:
    """The key for an age identity; its recipient is derived with `age-keygen -y`."""
    try:
        derived = subprocess.run(
            ["age-keygen", "-y"], input=identity.encode(), capture_output=True, timeout=30
        )
    except FileNotFoundError:
        raise EncryptionError(
            "encryption is configured but age is not installed: install the age package "
            "(Debian: apt-get install age)"
        ) from None
    recipient = derived.stdout.decode().strip()
    if derived.returncode != 0 or not recipient.startswith("age1"):
        raise EncryptionError(
            f"{setting}: not an age identity (expected one line starting AGE-SECRET-KEY-1, as "
            "written by age-keygen)"
        )
    return ArchiveKey(recipient=recipient, identity=identity.strip())


def unwrap_with_kms(wrapped: str, config: EncryptionConfig) -> str:
    """The identity from its KMS ciphertext (base64 of the CiphertextBlob)."""
    from backup_pipelines.storage.s3 import aws_client  # boto3 only where KMS is used

    setting = "encryption.kms_wrapped_identity"
    try:
        blob = base64.b64decode(wrapped.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionError(
            f"{setting}: not base64 (give the KMS CiphertextBlob in base64)"
        ) from None
    endpoint = config.kms_endpoint_url
    if endpoint:
        endpoint = expand_env(endpoint, "encryption.kms_endpoint_url")
    client = aws_client("kms", endpoint, config.kms_region)
    try:
        plaintext = client.decrypt(CiphertextBlob=blob)["Plaintext"]
    except Exception as error:  # botocore raises many types; report the code, not the blob
        code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
        raise EncryptionError(
            f"{setting}: AWS KMS could not decrypt it ({code}); check the key's policy allows "
            "kms:Decrypt for this role and the region"
        ) from None
    return plaintext.decode()


def key_from_config(config: EncryptionConfig | None) -> ArchiveKey | None:
    if config is None:
        return None
    if config.identity is not None:
        current = _key_from_env(config.identity, "encryption.identity")
    else:
        assert config.kms_wrapped_identity is not None
        wrapped = expand_env(config.kms_wrapped_identity, "encryption.kms_wrapped_identity")
        current = key_from_identity(unwrap_with_kms(wrapped, config), "the KMS-unwrapped identity")
    previous = tuple(
        _key_from_env(value, f"encryption.previous_identities[{number}]")
        for number, value in enumerate(config.previous_identities)
    )
    return replace(current, previous=previous)


def _key_from_env(value: str, setting: str) -> ArchiveKey:
    return key_from_identity(expand_env(value, setting), setting)


def key_problem(manifest: Encoded, key: ArchiveKey | None) -> str | None:
    """Why `key` cannot read `manifest`'s object, or None when it can (or none is needed)."""
    if manifest.encryption is None:
        return None
    where = f"{manifest.subject}, {manifest.partition}"
    if key is None:
        return (
            f"{where}: the backup is encrypted with age to {manifest.encryption_recipient}; "
            "configure encryption.identity (or kms_wrapped_identity) with its key to read it"
        )
    if manifest.encryption_recipient not in key.readable_recipients:
        return (
            f"{where}: wrong key: the backup is encrypted to {manifest.encryption_recipient}, "
            f"the configured keys are for {', '.join(key.readable_recipients)}; configure the "
            "identity the backup was encrypted with (after a rotation, in "
            "encryption.previous_identities)"
        )
    return None


@contextlib.contextmanager
def decoding_stages(
    manifest: Encoded, key: ArchiveKey | None
) -> Iterator[tuple[Stages, tuple[int, ...]]]:
    """The stages turning a stored object back into a pg_dump archive, and the fds they need.

    Call `key_problem` first: this assumes the key fits.
    """
    decompressor = decompress_command(manifest.compression)
    decompress: Stages = [(manifest.compression, decompressor)] if decompressor else []
    if manifest.encryption is None or key is None:
        yield decompress, ()
        return
    with _identity_pipe(key) as fd:
        decrypt = (AGE, [AGE, "--decrypt", "--identity", f"/dev/fd/{fd}"])
        yield [decrypt, *decompress], (fd,)


@contextlib.contextmanager
def _identity_pipe(key: ArchiveKey) -> Iterator[int]:
    """The read end of a pipe holding every identity; a child inherits it as a file."""
    read_end, write_end = os.pipe()
    try:
        # An identity is ~75 bytes, a few are far below the pipe's buffer: this cannot block.
        os.write(write_end, key.identity_file())
    finally:
        os.close(write_end)
    try:
        yield read_end
    finally:
        os.close(read_end)
