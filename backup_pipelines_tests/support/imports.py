"""Reading a package's imports from its source, as a reviewer would: every module and what it
imports (at module level or inside a function)."""

import ast
from collections.abc import Iterator
from pathlib import Path

from backup_pipelines_tests.support.paths import REPOSITORY


def package_modules(package: str) -> Iterator[tuple[str, Path]]:
    """(module name, file) of every module of `package`."""
    root = REPOSITORY / package.replace(".", "/")
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPOSITORY).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, with `from m import n` giving both m and m.n (n may be a
    module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found
