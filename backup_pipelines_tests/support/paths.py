"""Where the repository's files are that tests run as they are (docker/, the Azure CLI), the
browser the UI tests drive, and where they leave their screenshots."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DOCKER = REPOSITORY / "docker"
# The Azure CLI in its own environment (scripts/setup --tests): it pins its own Azure libraries.
AZURE_CLI = REPOSITORY / ".venv" / "azure-cli" / "bin"
# Debian's chromium, driven by Playwright (never a downloaded browser).
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPOSITORY / "ui-screenshots"  # ignored by git
