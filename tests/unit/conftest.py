"""tests/unit/: no emulator, no subprocess, no network: the whole folder runs in seconds.

Enforced here, so a test that needs more is moved to tests/ instead of slowing the edit loop."""
from __future__ import annotations

import subprocess

import pytest

from devrev_sandbox.server import DevRevSandbox


@pytest.fixture(autouse=True)
def _unit_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tests/unit/ runs no emulator and no subprocess: move this test to tests/")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(DevRevSandbox, "start", refuse)
