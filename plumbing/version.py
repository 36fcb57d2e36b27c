"""The tool's name and version, from the one place they are written: pyproject.toml.

Every report, backup manifest and User-Agent stamps them, and every script answers `--version`
with them. From a checkout, the checkout's pyproject.toml is read (so a stale install in the same
virtualenv cannot lie about the code that runs); an installed copy has no pyproject.toml beside it
and reads its own package metadata instead.
"""
from __future__ import annotations

import os
import tomllib
from importlib import metadata

TOOL_NAME = "devrev-contact-merge"   # the distribution's name in pyproject.toml


def _read_version() -> str:
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(checkout, "rb") as fh:
            project = tomllib.load(fh).get("project", {})
        if project.get("name") == TOOL_NAME:
            return str(project["version"])
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        pass
    try:
        return metadata.version(TOOL_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


TOOL_VERSION = _read_version()
