"""Where the repository's files are that tests run as they are (docker/, the Azure CLI)."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DOCKER = REPOSITORY / "docker"
# The Azure CLI in its own environment (scripts/setup --tests): it pins its own Azure libraries.
AZURE_CLI = REPOSITORY / ".venv" / "azure-cli" / "bin"
