"""us4's version, the one small module that knows it: pyproject.toml is where it is written;
an installed us4 reads it from its metadata."""
from __future__ import annotations


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("us4")
    except PackageNotFoundError:  # a checkout on sys.path without an install
        import tomllib
        from pathlib import Path

        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["version"]


__version__ = _version()
