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
import hashlib
import logging
import os
import secrets
import shutil
import stat
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
    under the first; then empty `.sandbox/` if `target.sandbox_reset`. `.sandbox` and its lock
    are never reached through a link (a planted `.sandbox` symlink is refused, not emptied).
    Without --sandbox: hold this machine's lock of the DevRev tenant and token (tenant_held).
    UsageError while another run holds the lock."""
    if not target.sandbox:
        with tenant_held(target_of(target), os.environ.get("DEVREV_API_TOKEN", "").strip()):
            yield
        return
    from plumbing.files import make_private_dir
    if os.path.islink(SANDBOX_DIR) or (os.path.lexists(SANDBOX_DIR) and not os.path.isdir(SANDBOX_DIR)):
        raise UsageError(f"{SANDBOX_DIR} is {'a link' if os.path.islink(SANDBOX_DIR) else 'not a folder'}: the "
                         f"sandbox keeps its state in a folder of its own there; move it away, then re-run")
    make_private_dir(SANDBOX_DIR)
    reset = target.sandbox_reset
    try:
        dir_fd = os.open(SANDBOX_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:   # swapped for a link since the check above
        raise UsageError(f"{SANDBOX_DIR} cannot be used ({exc.strerror or exc}): move it away, then re-run") from None
    try:
        try:
            fd = os.open(SANDBOX_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise UsageError(f"{SANDBOX_DIR}/{SANDBOX_LOCK} cannot be used ({exc.strerror or exc}): move it away, "
                             f"then re-run") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                what = "reset" if reset else "use"
                raise UsageError(f"another run is using the sandbox ({SANDBOX_DIR}/): cannot {what} it now; wait "
                                 f"for that run to finish (or stop it with Ctrl-C), then re-run") from None
            if reset:
                _empty_sandbox(dir_fd)
            _ensure_epoch(dir_fd)
            yield
        finally:
            os.close(fd)  # releases the lock
    finally:
        os.close(dir_fd)


SANDBOX_EPOCH = "epoch"   # in .sandbox/: one id per emulator life, new at each --sandbox-reset


def _ensure_epoch(dir_fd: int) -> None:
    """Give this emulator life its id (kept until the next reset empties the folder)."""
    try:
        fd = os.open(SANDBOX_EPOCH, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(8))


def sandbox_epoch() -> str:
    """The id of the sandbox emulator's present life (`.sandbox/epoch`); "unknown" when none
    can be read (a sandbox made before 1.4.0, reset since or not)."""
    path = os.path.join(SANDBOX_DIR, SANDBOX_EPOCH)
    try:
        if os.path.islink(path):
            return "unknown"
        with open(path, encoding="ascii") as fh:
            return fh.read(64).strip() or "unknown"
    except (OSError, UnicodeError):
        return "unknown"


def backup_target(target: RunTarget, client: DevRevClient | None = None) -> str:
    """What a backup records as the DevRev it was read from: DevRev's base URL, or
    "sandbox:<epoch>" (a rehearsal's backups belong to one emulator life: a reset ends it)."""
    return f"sandbox:{sandbox_epoch()}" if target.sandbox else target_of(target, client)


def _empty_sandbox(dir_fd: int) -> None:
    """Everything in `.sandbox/` (the folder `dir_fd`, opened without following a link) but
    the lock file itself; a link inside is removed, never followed."""
    for name in os.listdir(dir_fd):
        if name == SANDBOX_LOCK:
            continue
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


TENANT_LOCK_DIR_ENV = "DEVREV_MERGE_LOCK_DIR"   # where the tenant locks live (default: the user's cache)


def tenant_lock_dir() -> str:
    """DEVREV_MERGE_LOCK_DIR, else `$XDG_CACHE_HOME/devrev-contact-merge/locks` (~/.cache/...)."""
    named = os.environ.get(TENANT_LOCK_DIR_ENV)
    if named:
        return named
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "devrev-contact-merge", "locks")


def tenant_lock_path(base_url: str, token: str) -> str:
    """The lock file of one DevRev tenant and token: named by a hash of both, never the token."""
    key = hashlib.sha256(f"devrev-contact-merge lock\n{base_url}\n{token}".encode("utf-8")).hexdigest()[:32]
    return os.path.join(tenant_lock_dir(), f"tenant-{key}.lock")


@contextlib.contextmanager
def tenant_held(base_url: str, token: str) -> Iterator[None]:
    """Hold this machine's lock of the tenant `base_url` used with `token` (fcntl.flock on
    tenant_lock_path) for the whole run, so two runs with different savepoints cannot back up
    and merge the same sets at once; released at exit, also when the process dies. No token:
    nothing to lock (the run stops on its configuration). UsageError (one line, naming the
    holder: pid, script, since when) while another run holds it. Runs on other machines
    cannot be seen: see the README's known limits."""
    if not token:
        yield
        return
    from plumbing.clock import iso_utc
    from plumbing.files import make_private_dir
    path = tenant_lock_path(base_url, token)
    try:
        make_private_dir(os.path.dirname(path))
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "a run starting or stopping"
                os.close(fd)
                raise UsageError(f"another run ({holder[:200]}) is using DevRev {base_url} with this "
                                 f"token on this machine: wait for it to finish (or stop it with Ctrl-C), "
                                 f"then re-run") from None
            try:     # the holder before us removes the file as it lets go: lock the one at the path
                current = os.stat(path, follow_symlinks=False)
                same = (current.st_dev, current.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {os.path.basename(sys.argv[0] or 'python')}, since {iso_utc()}"
                  .encode("utf-8"), 0)
    except OSError as exc:
        raise UsageError(f"the run lock {path} cannot be used ({exc.strerror or exc}): point "
                         f"{TENANT_LOCK_DIR_ENV} at a folder of your own") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)      # while still held: a run waiting on this file tries again
        os.close(fd)


@contextlib.contextmanager
def open_client(target: RunTarget, stop: cli.StopSignal) -> Iterator[DevRevClient]:
    """The run's DevRevClient, closed on exit: with `target.sandbox` the emulator started on
    `.sandbox/state.json` (seeded from its demo data, playing `target.sandbox_modes`) and
    stopped on exit; else DevRev from the environment (DEVREV_API_TOKEN, DEVREV_BASE_URL;
    ConfigError when unusable). `target.rate_limit` caps calls per minute; `target.workers`
    sizes the connection pool (2 per worker, at least 16; workers not given: the most the run
    may size them to, runs.workers.CEILING). `stop` interrupts waits."""
    from runs.workers import CEILING
    sandbox = None
    pool_size = max(16, (target.workers or CEILING) * 2)
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
                                  stop_event=stop.event, pool_size=pool_size)
        else:
            client = DevRevClient.from_env(calls_per_minute=target.rate_limit, stop_event=stop.event,
                                           pool_size=pool_size)
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


def progress(total: int | None, desc: str, unit: str = " merge set", file: Any = None):
    """A progress bar on `file` (None: stderr), shown only when it is a terminal (a context
    manager yielding the tqdm bar, or None without tqdm). total None: a count and a rate only.
    Left before `total` (Ctrl-C, SIGTERM, an error), the bar stays at n/total and says
    "stopped", so it does not look finished."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in requirements.txt
        return contextlib.nullcontext(None)
    stream = sys.stderr if file is None else file
    bar = tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not stream.isatty(), dynamic_ncols=True)

    @contextlib.contextmanager
    def closing() -> Iterator[Any]:
        try:
            yield bar
        finally:
            if not bar.disable and bar.total is not None and bar.n < bar.total:
                bar.set_description(f"{desc} stopped", refresh=False)
            bar.close()
    return closing()


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
