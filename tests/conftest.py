"""Shared fixtures and hooks: emulators checked against DevRev's own spec, clients, the token scan.

Helpers (functions and classes) live in tests/helpers.py: `from helpers import ...`.

Every emulator a test starts through `make_sandbox` validates each request it receives
and each answer it gives against tests/fixtures/devrev_spec_schemas.json (extracted
from DevRev's OpenAPI spec); a mismatch fails the test that caused it.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading

import pytest

import devrev_client
from devrev_client import DevRevClient
from devrev_sandbox.server import DevRevSandbox
from helpers import TEST_TOKEN
from spec_validator import SpecValidator

# The tests' manifest key (plumbing.manifest_key) lives in a folder of their own, never in the
# user's configuration; subprocesses inherit it.
os.environ["DEVREV_MERGE_KEY_FILE"] = os.path.join(tempfile.mkdtemp(prefix="merge-key-"), "manifest.key")
os.environ["DEVREV_MERGE_LOCK_DIR"] = tempfile.mkdtemp(prefix="merge-locks-")   # the tenant locks, likewise

_VALIDATOR = SpecValidator()
SPEC_STATS = {"requests": 0, "responses": 0, "mismatches": 0}
_stats_lock = threading.Lock()


class SpecRecorder:
    """The emulator's validator hook: collects every spec mismatch it sees."""

    def __init__(self, check_requests: bool = True, exempt: tuple[str, ...] = ()):
        self.check_requests = check_requests
        self.exempt = exempt
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, endpoint, request_body, status, response_body):
        problems = []
        if self.check_requests and request_body is not None and status != 401:
            problems += _VALIDATOR.validate_request(endpoint, request_body)
        problems += _VALIDATOR.validate_response(endpoint, status, response_body)
        problems = [p for p in problems if not p.startswith(self.exempt)]
        with _stats_lock:
            SPEC_STATS["requests"] += int(self.check_requests and request_body is not None)
            SPEC_STATS["responses"] += 1
            SPEC_STATS["mismatches"] += len(problems)
        with self._lock:
            self.problems += problems


@pytest.fixture
def make_sandbox():
    """make_sandbox(seed, spec_requests=True, **DevRevSandbox kwargs) -> started sandbox.

    spec_requests=False is for tests that send malformed requests on purpose; the
    emulator's answers are still checked against the spec. spec_exempt: prefixes of
    mismatches a mode produces on purpose (e.g. "works.list response 404", a status the
    spec does not declare), which are not counted. modes=BehaviourModes(...) picks how the
    emulator plays DevRev where its behaviour is unknown.
    """
    started = []

    def factory(seed=None, *, spec_requests: bool = True, file_auth_expected: bool = False,
                spec_exempt: tuple[str, ...] = (), **kwargs):
        recorder = SpecRecorder(check_requests=spec_requests, exempt=tuple(spec_exempt))
        kwargs.setdefault("token", TEST_TOKEN)
        sandbox = DevRevSandbox(seed, validator=recorder, **kwargs).start()
        started.append((sandbox, recorder, file_auth_expected))
        return sandbox

    yield factory
    problems = []
    for sandbox, recorder, file_auth_expected in started:
        sandbox.stop()
        problems += recorder.problems
        if not file_auth_expected:
            leaked = [e["path"] for e in sandbox.request_log if e["server"] == "files" and e["auth"]]
            problems += [f"the attachment host received an Authorization header: {p}" for p in leaked]
        if TEST_TOKEN in json.dumps(sandbox.request_log, default=str):
            problems.append("the token appears in the emulator's request log")
    assert not problems, "DevRev spec mismatches:\n" + "\n".join(sorted(set(problems))[:30])


@pytest.fixture
def fast_backoff(monkeypatch):
    """The production backoff (0.5 s base, 8 s cap, jittered) would turn the ~200 retries
    of a faulty run into minutes of sleeping. What is under test is *whether and what* the
    client retries, not how long it sleeps, so in-process runs wait 1 ms instead. The
    production defaults are untouched (the subprocess tests use them)."""
    real_init = devrev_client.DevRevClient.__init__

    def fast(self, *args, **kwargs):
        kwargs.setdefault("backoff_base", 0.001)
        kwargs.setdefault("backoff_cap", 0.001)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(devrev_client.DevRevClient, "__init__", fast)


@pytest.fixture
def make_client():
    clients = []

    def factory(sandbox, **kwargs):
        kwargs.setdefault("calls_per_minute", 1_000_000)
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("backoff_cap", 0.05)
        client = DevRevClient(kwargs.pop("token", TEST_TOKEN), sandbox.base_url, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def _files_holding(root: str, secret: bytes) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):   # a FIFO a test planted is never read
                continue
            try:
                with open(path, "rb") as fh:
                    if secret in fh.read():
                        found.append(path)
            except OSError:
                pass
    return found


def pytest_sessionfinish(session, exitstatus):
    """After the whole suite: the test token is in no file any test wrote (logs, reports,
    backups, savepoints, samples). Tests that write the token on purpose (a .env file)
    name that file `.env`."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    try:
        root = str(factory.getbasetemp())
    except (OSError, ValueError):
        return
    leaks = [p for p in _files_holding(root, TEST_TOKEN.encode()) if os.path.basename(p) != ".env"]
    if leaks:
        session.config._token_leaks = leaks
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    leaks = getattr(terminalreporter.config, "_token_leaks", None)
    if leaks:
        terminalreporter.write_line("THE TEST TOKEN WAS WRITTEN TO: " + ", ".join(leaks[:10]), red=True)
    terminalreporter.write_line(
        f"DevRev spec validation: {SPEC_STATS['requests']} requests and {SPEC_STATS['responses']} responses "
        f"checked, {SPEC_STATS['mismatches']} mismatches")



def _measured_slow() -> set[str]:
    """The node ids tools/measure_slow.py measured at 0.5 s or more (tests/slow_tests.txt)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")
    if not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8") as fh:
        return {line.split("  #")[0].strip() for line in fh if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
    """Mark `slow` what was measured slow, so `-m "not slow"` is the quick command."""
    slow = _measured_slow()
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
