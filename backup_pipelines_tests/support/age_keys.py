"""age keys for the encryption tests, made with the real age-keygen."""

import subprocess
from pathlib import Path

AGE_MAGIC = b"age-encryption.org/v1"  # how every age file begins


def new_identity(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.key"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    (line,) = [x for x in path.read_text().splitlines() if x.startswith("AGE-SECRET-KEY-")]
    return line
