"""The package's one compiled part: the dump's row counter
(backup_pipelines/core/postgres/_rowcount.c), built by `pip install .`, `pip install -e .` and
`python -m build` alike. Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

ROW_COUNTER = Extension(
    "backup_pipelines.core.postgres._rowcount",
    sources=["backup_pipelines/core/postgres/_rowcount.c"],
    extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
)


class BuildRowCounter(build_ext):
    """A build that says what is missing when the row counter cannot be compiled."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, ExecError, PlatformError) as error:
            raise SystemExit(
                "backup_pipelines: cannot compile its row counter "
                f"({', '.join(ext.sources)}): {str(error).rstrip('.')}. Installing "
                "backup_pipelines needs a C compiler and the Python headers (Debian/Ubuntu: "
                "apt-get install gcc python3-dev; Alpine: apk add gcc musl-dev python3-dev). A "
                "dump counts its rows with it, so the package is not installed without it."
            ) from None


setup(ext_modules=[ROW_COUNTER], cmdclass={"build_ext": BuildRowCounter})
