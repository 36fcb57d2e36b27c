"""The run plumbing every script shares: the sandbox, the client, the target, the workers.

merge_contacts.py, restore_contacts.py and find_duplicates.py all run either against the
local emulator (`--sandbox`, its state in `.sandbox/`) or against DevRev from the
environment; they must open, lock and name that target the same way, or a restore could
pull the emulator from under a merge, or a preview of one DevRev unlock a run on another.
The sets of a run go through the same worker pool and progress bar.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from devrev_api import assumptions as facts
from devrev_client import DevRevClient
from plumbing import cli
from plumbing.cli import UsageError

SANDBOX_DIR = ".sandbox"
SANDBOX_LOCK = "run.lock"  # held by every --sandbox run; --sandbox-reset keeps it
SANDBOX_CALLS_PER_MINUTE = 60000  # the emulator's default pace: no real limit to respect
# The merge's savepoint journal (merge_contacts.py --savepoint), also read by find_duplicates.py
# and create_test_sample.py to recognise the contacts earlier merges made primary
MERGE_SAVEPOINT = os.path.join("savepoints", "merge_journal.sqlite3")
SANDBOX_MERGE_SAVEPOINT = os.path.join(SANDBOX_DIR, "savepoints.sqlite3")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTarget:
    """Where a run goes and how it may call it, built once by each script from its options:
    the emulator (`sandbox`, emptied first with `sandbox_reset`, playing `sandbox_modes`, a
    devrev_sandbox.modes.BehaviourModes) or DevRev from the environment; `rate_limit` caps
    calls per minute (None: the default, see RATE_LIMIT_HELP); `workers` sizes the
    connection pool (None: the client's default)."""
    sandbox: bool
    rate_limit: float | None = None
    workers: int | None = None
    sandbox_reset: bool = False
    sandbox_modes: Any = None


RATE_LIMIT_HELP = (f"client-side cap on API calls per minute (default: DEVREV_RATE_LIMIT, else the pace DevRev "
                   f"announces in X-Ratelimit-Limit, else {facts.DEFAULT_CALLS_PER_MINUTE}; with --sandbox: "
                   f"{SANDBOX_CALLS_PER_MINUTE})")


def merge_savepoint(given: str | None, sandbox: bool) -> str:
    """The merge's savepoint file: --savepoint, else the default (the sandbox's with --sandbox)."""
    return given or (SANDBOX_MERGE_SAVEPOINT if sandbox else MERGE_SAVEPOINT)


def add_sandbox_mode_option(parser: argparse.ArgumentParser) -> None:
    """--sandbox-mode NAME=VALUE (repeatable), the same in every script that starts the emulator."""
    parser.add_argument("--sandbox-mode", action="append", default=[], metavar="NAME=VALUE",
                        help="with --sandbox: play an unknown DevRev behaviour another way (repeatable; the names are "
                             "in devrev_sandbox/modes.py); give a restore the modes its merge was rehearsed with")


def sandbox_modes(pairs: list[str], sandbox: bool) -> Any:
    """The emulator's behaviour modes for --sandbox: merges retire at the first read (a quick
    rehearsal), then the --sandbox-mode pairs; None without --sandbox. UsageError for a bad
    pair, or pairs without --sandbox."""
    if not sandbox:
        if pairs:
            raise UsageError("--sandbox-mode only goes with --sandbox")
        return None
    from devrev_sandbox.modes import BehaviourModes
    try:
        return BehaviourModes(merge_retire_after_gets=1).with_pairs(pairs)
    except ValueError as exc:
        raise UsageError(str(exc).replace("--mode", "--sandbox-mode")) from None


def add_rate_limit_option(parser: argparse.ArgumentParser) -> None:
    """--rate-limit, the same words in every script that calls DevRev."""
    parser.add_argument("--rate-limit", type=cli.rate_limit, metavar="CALLS_PER_MINUTE", help=RATE_LIMIT_HELP)


@contextlib.contextmanager
def sandbox_held(target: RunTarget) -> Iterator[None]:
    """With `target.sandbox`: hold the sandbox's lock (`.sandbox/run.lock`) for the whole run,
    so a second run (and above all a --sandbox-reset) cannot pull the emulator's state from
    under the first; then empty `.sandbox/` if `target.sandbox_reset`. Without --sandbox it
    does nothing. UsageError while another run holds the lock."""
    if not target.sandbox:
        yield
        return
    from plumbing.files import make_private_dir
    make_private_dir(SANDBOX_DIR)
    fd = os.open(os.path.join(SANDBOX_DIR, SANDBOX_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    reset = target.sandbox_reset
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            what = "reset" if reset else "use"
            raise UsageError(f"another run is using the sandbox ({SANDBOX_DIR}/): cannot {what} it now; wait for "
                             f"that run to finish (or stop it with Ctrl-C), then re-run") from None
        if reset:
            _empty_sandbox()
        yield
    finally:
        os.close(fd)  # releases the lock


def _empty_sandbox() -> None:
    """Everything in `.sandbox/` but the lock file itself."""
    for name in os.listdir(SANDBOX_DIR):
        path = os.path.join(SANDBOX_DIR, name)
        if name == SANDBOX_LOCK:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


@contextlib.contextmanager
def open_client(target: RunTarget, stop: cli.StopSignal) -> Iterator[DevRevClient]:
    """The run's DevRevClient, closed on exit: with `target.sandbox` the emulator started on
    `.sandbox/state.json` (seeded from its demo data, playing `target.sandbox_modes`) and
    stopped on exit; else DevRev from the environment (DEVREV_API_TOKEN, DEVREV_BASE_URL;
    ConfigError when unusable). `target.rate_limit` caps calls per minute; `target.workers`
    sizes the connection pool (2 per worker, at least 16). `stop` interrupts waits."""
    sandbox = None
    workers = target.workers
    pool = {"pool_size": max(16, workers * 2)} if workers else {}
    try:
        if target.sandbox:
            from devrev_sandbox.dataset import DEMO_SEED
            from devrev_sandbox.server import DEFAULT_TOKEN, DevRevSandbox
            from plumbing.files import make_private_dir
            make_private_dir(SANDBOX_DIR)
            sandbox = DevRevSandbox(DEMO_SEED, state_file=os.path.join(SANDBOX_DIR, "state.json"),
                                    modes=target.sandbox_modes).start()
            log.info("sandbox DevRev emulator on %s (state in %s/)", sandbox.base_url, SANDBOX_DIR)
            client = DevRevClient(DEFAULT_TOKEN, sandbox.base_url,
                                  calls_per_minute=target.rate_limit or SANDBOX_CALLS_PER_MINUTE,
                                  stop_event=stop.event, **pool)
        else:
            client = DevRevClient.from_env(calls_per_minute=target.rate_limit, stop_event=stop.event, **pool)
        try:
            yield client
        finally:
            client.close()
    finally:
        if sandbox is not None:
            sandbox.stop()


def target_of(target: RunTarget, client: DevRevClient | None = None) -> str:
    """Where the run goes: "sandbox", or DevRev's base URL without a trailing slash (the
    client's, else DEVREV_BASE_URL's, else the default). A preview must name the same."""
    if target.sandbox:
        return "sandbox"
    if client is not None:
        return client.base_url
    return (os.environ.get("DEVREV_BASE_URL") or facts.DEFAULT_BASE_URL).strip().rstrip("/")


def progress(total: int | None, desc: str, unit: str = " merge set"):
    """A progress bar on stderr, shown only when stderr is a terminal (a context manager
    yielding the tqdm bar, or None without tqdm). total None: a count and a rate only."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in requirements.txt
        return contextlib.nullcontext(None)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def run_sets(items: Iterable[Any], work: Callable[[Any], Any], workers: int, stop: cli.StopSignal,
             desc: str) -> Iterator[tuple[Any, Any]]:
    """Run work(item) for each item on `workers` threads, in order of submission, yielding
    (item, result or the exception it raised, BaseExceptions included) as each finishes.
    Once `stop` is set no further item starts; those in flight are still yielded."""
    items = list(items)
    with progress(len(items), desc) as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="set") as pool:
        pending = {}
        queue = items
        while queue or pending:
            while queue and len(pending) < workers and not stop.is_set():
                item = queue.pop(0)
                pending[pool.submit(work, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                if bar is not None:
                    bar.update(1)
                try:
                    result = future.result()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    result = exc
                yield item, result


def reraise_fatal(result: Any, stop: cli.StopSignal) -> None:
    """A worker's KeyboardInterrupt (or other BaseException that is not an Exception) stops
    the run as it would in the main thread: `stop` is set and it is raised here."""
    if isinstance(result, BaseException) and not isinstance(result, Exception):
        stop.set()
        raise result
