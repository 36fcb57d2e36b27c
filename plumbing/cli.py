"""The command-line contract every script of the suite follows.

One place owns what an admin sees when a script starts, fails or is stopped:

- `ExitCode`: 0 every piece of work done, 1 some work failed and needs a person, 2 bad usage
  or input (nothing was changed), 75 a temporary failure a later run may finish without a
  person (DevRev unreachable or throttling, a merge job still running), 130 stopped by Ctrl-C
  or SIGTERM (re-run to resume).
- `UserError` and its kinds (`UsageError`, and the input errors of other modules that
  subclass it): an error the user can act on, printed as one `error: ...` line.
- `ArgumentParser`: argparse that reports a bad option as one line, and option types
  that refuse `nan`, `inf` and out-of-range numbers.
- `run_logging`: DEBUG to `<log_dir>/<prefix>_<run id>.log`, INFO to the console around
  the progress bar, the run id on every line; every line redacted (the token, whole
  occurrences only, and the query string of any URL, where presigned signatures live);
  third-party library lines go to the log file only. `log_format="jsonl"` (`--log-format`,
  `add_log_format_option`) writes the file as one JSON object a line for log shippers, with
  the same redaction; the console stays text.
- `log_subject`: names what the lines logged inside it are about (a merge set's email), so
  with several workers every line says which set it belongs to; `FILE_ONLY` keeps a line
  (a summary already printed on stdout) off the console.
- `graceful_stop`: the first Ctrl-C or SIGTERM asks the work to stop after the call in
  flight and records which signal it was; the second stops at once.
- `run_main`: the wrapper every `main(argv)` runs through, which turns every error a
  user can cause into one line and the right exit code, never a traceback; it turns core
  dumps off (they would hold the token) and neutralises control characters in everything
  printed (`neutralise`, also applied to every log line), so a value cannot drive the terminal.

Modelled on pypa/twine (one exception base, one place that maps errors to exit codes)
and httpie (exit codes as an enum).
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import enum
import errno
import functools
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Callable, Iterator, NoReturn, Sequence, TypeVar

from plumbing import json_summary
from plumbing.version import TOOL_NAME, TOOL_VERSION


class ExitCode(enum.IntEnum):
    """Process exit codes, the same for every script."""

    OK = 0
    FAILED = 1
    USAGE = 2
    TEMPORARY = 75      # sysexits EX_TEMPFAIL: a later run may finish this without a person
    INTERRUPTED = 130

    def worse(self, other: "ExitCode | int") -> "ExitCode":
        """The code that tells more: bad usage > interrupted > failed (a person is needed) >
        temporary (a later run may finish it alone) > ok."""
        rank = {ExitCode.OK: 0, ExitCode.TEMPORARY: 1, ExitCode.FAILED: 2, ExitCode.INTERRUPTED: 3,
                ExitCode.USAGE: 4}
        other = ExitCode(other)
        return other if rank[other] > rank[self] else self


# what each exit code tells a script (the reports, the JSON summaries and the logs say it in these words)
EXIT_MEANING: dict[int, str] = {
    ExitCode.OK: "every set done or skipped by the live checks",
    ExitCode.FAILED: "a set failed and needs a person (its line says why)",
    ExitCode.USAGE: "bad usage or input; nothing was changed by this run",
    ExitCode.TEMPORARY: "a temporary failure (DevRev unreachable or throttling, a merge job still running): a later "
                        "run may finish it without a person",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C or SIGTERM; re-run the same command to resume",
}


class UserError(Exception):
    """An error the user can act on (bad option, bad file, bad folder, bad config).

    Printed as one `error: <message>` line; the script exits with `exit_code`. Other
    modules' input errors (CSV, savepoint, configuration) subclass it, so this module
    needs to know none of them.
    """

    exit_code = ExitCode.USAGE


class UsageError(UserError):
    """Bad usage or input: one line for the user, exit 2."""


def command_for(script: str) -> str:
    """How the admin runs `script` (e.g. "merge_contacts.py") in the way they ran this one: the
    installed command ("devrev-merge-contacts") when this process is one, else
    "python3 merge_contacts.py" from the checkout. For the hints the tool prints."""
    if os.path.basename(sys.argv[0]).startswith("devrev-"):
        return "devrev-" + script.removesuffix(".py").replace("_", "-")
    return f"python3 {script}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (a `UsageError`), not a usage dump and exit.

    Abbreviated options are refused: `--skip` must not silently mean `--skip-preview-check`
    on a tool that changes production data.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        launcher = os.path.basename(sys.argv[0])
        if launcher.startswith("devrev-"):   # an installed command (pyproject's [project.scripts]) says its own name
            kwargs["prog"] = launcher
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s ({TOOL_NAME}) {TOOL_VERSION}",
                          help="print the tool's version and exit")

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


_N = TypeVar("_N", int, float)


def _number(text: str, kind: Callable[[str], _N], what: str) -> _N:
    try:
        value = kind(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (`nan`, `inf`, 0 and negatives refused)."""
    value = _number(text, float, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text!r}")
    return value


def float_between(low: float, high: float) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] (`nan`, `inf` refused)."""

    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, not {text!r}")
        return value

    parse.__name__ = "number"
    return parse


# a pace below one call a minute would leave a run silent for hours; above DevRev's largest
# documented quota it only hides typos (devrev_api.assumptions: the rate limit section)
rate_limit = float_between(1, 100_000)


def int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high] (high None: no upper bound)."""

    def parse(text: str) -> int:
        value = _number(text, int, "a whole number")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse


# --------------------------------------------------------------------------- redaction
# A URL (scheme://...) or a bare path starting a word ("GET /blobs/1?sig=... HTTP/1.1", as
# urllib3 logs requests), then its query string.
_URL_QUERY = re.compile(r"((?:\b[a-zA-Z][a-zA-Z0-9+.-]*://|(?<![^\s\"'(<=])/)[^\s?#'\"<>]*)\?[^\s#'\"<>]*")


class Redactor:
    """Removes secrets from text: the token (whole occurrences) and URL query strings.

    A presigned download URL carries its signature in the query string, so no URL's
    query string is ever written; the path stays, for diagnosis. A secret of
    `ANYWHERE_LEN` characters or more (a real token) is masked wherever it appears, even
    glued to other text; a shorter one only where it stands alone as a word (not between
    letters or digits), so a short value cannot garble unrelated text.
    """

    ANYWHERE_LEN = 12

    def __init__(self, secret: str | None = None):
        self.secret = secret or ""
        pattern = re.escape(self.secret)
        if len(self.secret) < self.ANYWHERE_LEN:
            pattern = r"(?<![A-Za-z0-9])" + pattern + r"(?![A-Za-z0-9])"
        self._token = re.compile(pattern) if self.secret else None

    def __call__(self, text: str) -> str:
        return self.mask_secret(_URL_QUERY.sub(r"\1?<redacted>", text))

    def mask_secret(self, text: str) -> str:
        """Only the token masked (as above), URLs left whole: for error texts that must keep
        a URL's query (a moved object's new id)."""
        if self._token is not None and self.secret in text:
            text = self._token.sub("***", text)
        return text


# --------------------------------------------------------------------------- control characters
# What could drive a terminal from a value DevRev or a file gave us (a display id, a name, an email,
# DevRev's message): C0 controls but tab and newline (ESC starts every escape sequence; CR and
# backspace overwrite what was shown), DEL, the C1 controls (0x9b is a one-byte CSI), and the
# bidirectional overrides and isolates that reorder what a line shows.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str, keep: str = "") -> str:
    """`text` with each such control character shown as its escape (ESC as `\\x1b`, U+202E as
    `\\u202e`), newlines and tabs kept, and the characters in `keep` too."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(lambda m: m.group() if m.group() in keep else ascii(m.group())[1:-1], text)


class RedactingFormatter(logging.Formatter):
    """A Formatter whose whole output (message, arguments, traceback) is redacted, and whose
    control characters are neutralised (`neutralise`), for the console and the log file alike."""

    def __init__(self, fmt: str, redactor: Redactor):
        super().__init__(fmt)
        self.redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(neutralise(super().format(record)))


class JsonLinesFormatter(logging.Formatter):
    """One JSON object a line (time, level, logger, run_id, subject, message, exc), for log
    shippers that would otherwise have to parse the text format.

    Every string is neutralised and redacted exactly as `RedactingFormatter` does, before it is
    JSON-encoded: encoding first would escape a token holding `"` or `\\` so the redactor could
    miss it. ASCII-only output, so a value Python cannot write as UTF-8 (a lone surrogate from a
    file name) cannot make the log file fail (`_LogFileHandler` gives up after one failure)."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redact = redactor

    def _clean(self, text: str) -> str:
        return self.redact(neutralise(text))

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, timezone.utc)
        subject = getattr(record, "subject_name", None)
        line: dict[str, Any] = {
            "time": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": self._clean(record.name),
            "run_id": getattr(record, "run_id", None),
            "subject": self._clean(subject) if subject else None,
            "message": self._clean(record.getMessage()),
        }
        exc = self.formatException(record.exc_info) if record.exc_info else record.exc_text
        if record.stack_info:
            exc = f"{exc}\n{self.formatStack(record.stack_info)}" if exc else self.formatStack(record.stack_info)
        if exc:
            line["exc"] = self._clean(exc)
        return json.dumps(line, ensure_ascii=True)


LOG_FORMATS = ("text", "jsonl")


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """`--log-format {text,jsonl}` (default text), the same for every script that logs."""
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="the log file's format: text lines, or one JSON object per line (jsonl) for log "
                             "shippers; the same redaction either way")


class _NeutralStream:
    """stdout or stderr as a script's body sees it (`neutral_console`): every write passes through
    `neutralise`, so print() cannot send an escape sequence from a value to the terminal.
    Everything else (fileno, isatty, encoding, flush) is the wrapped stream's."""

    def __init__(self, inner: Any, keep: str = ""):
        self._inner = inner
        self._keep = keep

    def write(self, text: str) -> int:
        self._inner.write(neutralise(text, self._keep) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def neutral_console() -> Iterator[None]:
    """sys.stdout and sys.stderr neutralise control characters inside (see _NeutralStream); stderr
    keeps the carriage return the progress bar redraws itself with. Nested: the outer one stays."""
    if isinstance(sys.stdout, _NeutralStream) or isinstance(sys.stderr, _NeutralStream):
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _NeutralStream(out), _NeutralStream(err, keep="\r")
    try:
        yield
    finally:
        if isinstance(sys.stdout, _NeutralStream):
            sys.stdout = out
        if isinstance(sys.stderr, _NeutralStream):
            sys.stderr = err


def disable_core_dumps() -> None:
    """No core file for this process, whatever the shell allows (`ulimit -c`): one would hold the
    token in clear. RLIMIT_CORE set to 0, soft and hard, where the platform has it."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, AttributeError, ValueError, OSError):
        pass


_LOG_SUBJECT: contextvars.ContextVar[str | None] = contextvars.ContextVar("log_subject", default=None)
FILE_ONLY = {"console": False}  # logging `extra=`: the line goes to the log file only


@contextlib.contextmanager
def log_subject(subject: str | None) -> Iterator[None]:
    """Every line logged inside (by any logger, in this thread or context) starts with
    `<subject>: `, e.g. the merge set's email; nested subjects replace the outer one."""
    token = _LOG_SUBJECT.set(subject)
    try:
        yield
    finally:
        _LOG_SUBJECT.reset(token)


class _RunIdFilter(logging.Filter):
    """Adds the run id and the line's subject (`log_subject`) to every record."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = self.run_id
        subject = _LOG_SUBJECT.get()
        record.subject = f"{subject}: " if subject else ""
        record.subject_name = subject   # the bare subject, for the jsonl format
        return True


def _on_console(record: logging.LogRecord) -> bool:
    return is_own_record(record) and getattr(record, "console", True)


def is_own_record(record: logging.LogRecord) -> bool:
    """True for this suite's loggers; third-party lines (urllib3's retry warnings) are not.

    Every module logs as `logging.getLogger(__name__)`, so a record's top-level name is one of
    ours exactly when no other installed distribution provides it and it is not the standard
    library's: a new module or folder is on the console without a list to keep."""
    return _is_own_top_level(record.name.split(".")[0])


@functools.lru_cache(maxsize=None)
def _is_own_top_level(name: str) -> bool:
    if name in sys.stdlib_module_names or name == "root":
        return False
    from importlib import metadata
    return metadata.packages_distributions().get(name, [TOOL_NAME]) == [TOOL_NAME]


class _ConsoleHandler(logging.Handler):
    """INFO and up of our own loggers to stderr, written around the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


_active: list[Redactor] = []   # the running script's redactors (run_logging): reports are scrubbed with them


def scrub(value: Any) -> Any:
    """`value` (JSON-like) with the token masked in every string and control characters other
    than line breaks and tabs escaped (`neutralise`, as for the console and the log): what a
    report may hold of what DevRev answered (a hostile answer must not put the token or a
    terminal escape into a report)."""
    if isinstance(value, str):
        for redactor in _active:
            value = redactor.mask_secret(value)
        return neutralise(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


@contextlib.contextmanager
def run_logging(log_dir: str | None, prefix: str, run_id: str, secret: str | None = None, *,
                log_format: str = "text") -> Iterator[str | None]:
    """Set up the run's logging; yields the log file's path (None when `log_dir` is None).

    The file (`<log_dir>/<prefix>_<run_id>.log`, mode 0600, folder 0700) gets DEBUG from
    every logger, as text lines or, with `log_format="jsonl"`, one JSON object a line
    (`JsonLinesFormatter`); the console gets INFO from this suite's loggers only, as text.
    Raises `UsageError` if the log folder cannot be made or written, or for an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise UsageError(f"--log-format {log_format!r}: must be one of {', '.join(LOG_FORMATS)}")
    redactor = Redactor(secret)
    _active.append(redactor)
    root = logging.getLogger()
    old_level = root.level
    console = _ConsoleHandler()
    console.setLevel(logging.INFO)
    console.addFilter(_on_console)
    console.setFormatter(RedactingFormatter("%(levelname)s [%(run_id)s] %(subject)s%(message)s", redactor))
    handlers: list[logging.Handler] = [console]
    log_path = None
    if log_dir:
        log_path = os.path.join(log_dir, f"{prefix}_{run_id}.log")
        file_handler = _open_log_file(log_dir, log_path)
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(JsonLinesFormatter(redactor) if log_format == "jsonl" else RedactingFormatter(
            "%(asctime)s [%(run_id)s] %(levelname)s %(threadName)s %(name)s: %(subject)s%(message)s", redactor))
        handlers.append(file_handler)
    for handler in handlers:
        handler.addFilter(_RunIdFilter(run_id))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield log_path
    except UserError as exc:  # run_main prints it; the log file keeps it too
        logging.getLogger(__name__).debug("stopped: %s", exc)
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
        if redactor in _active:
            _active.remove(redactor)


class _LogFileHandler(logging.FileHandler):
    """The log file; if it can no longer be written mid-run (folder gone, disk full), one
    warning line says so and the run goes on without it, instead of logging's traceback
    on every line."""

    _failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self._failed:
            return
        self._failed = True
        error = sys.exc_info()[1]
        reason = describe_os_error(error) if isinstance(error, OSError) else error
        print(f"warning: the log file {self.baseFilename} can no longer be written ({reason}); "
              f"going on without it", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the file; what cannot be flushed to it then (disk full) is said once on stderr
        like any failed line (handleError), never raised: a log failure after the work must not
        change the exit code, which says what happened to the work."""
        try:
            super().close()
        except OSError:
            self.handleError(logging.makeLogRecord({}))


def _open_log_file(log_dir: str, log_path: str) -> logging.FileHandler:
    from plumbing.files import make_private_dir, open_private
    try:
        make_private_dir(log_dir)
        open_private(log_path, "xb").close()
        return _LogFileHandler(log_path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log-dir {log_dir}: {describe_os_error(exc)}") from None


def describe_os_error(exc: OSError) -> str:
    """`not writable (Permission denied)`-style text for an OSError, without the traceback."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not writable ({reason})"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return "a file is in the way where a folder should be"
    if exc.errno == errno.ENOENT:
        return f"cannot be created here ({reason})"
    if exc.errno == errno.ENOSPC:
        return f"disk full ({reason})"
    return reason


def check_writable_dir(path: str, option: str) -> str:
    """Create `path` (0700) if needed and prove a file can be written in it.

    Returns the path. Raises `UsageError` naming the option (e.g. `--backup-dir`) when
    the folder cannot be made or written, so a run fails before its first API call.
    """
    from plumbing.files import make_private_dir
    try:
        make_private_dir(path)
        probe = os.path.join(path, f".write-test-{os.getpid()}-{secrets.token_hex(3)}")
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {path}: {describe_os_error(exc)}") from None
    return path


# --------------------------------------------------------------------------- stopping
class StopSignal:
    """Set by the first Ctrl-C or SIGTERM; remembers which one, for the log and report."""

    def __init__(self, event: threading.Event | None = None):
        self.event = event or threading.Event()
        self.signal_name: str | None = None
        # what the first Ctrl-C says when it comes now (None: graceful_stop's message): a run that
        # moved on to writing its files says so, instead of promising a stop it will not make
        self.message: str | None = None

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        """Ask the work to stop (without a signal: the tool itself, or a test)."""
        self.event.set()

    @property
    def reason(self) -> str:
        """`Ctrl-C`, `SIGTERM`, or `a stop request` when the event was set without a signal."""
        if self.signal_name == "SIGINT":
            return "Ctrl-C"
        return self.signal_name or "a stop request"


SAME_REQUEST_SECONDS = 1.0   # a second Ctrl-C or SIGTERM sooner than this repeats the first


@contextlib.contextmanager
def graceful_stop(stop: StopSignal, message: str = "Stopping after the call in flight; "
                  "re-run the same command to resume.", *,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[StopSignal]:
    """First Ctrl-C or SIGTERM: `stop.event` is set and `message` printed. Second: stop now.

    Off the main thread (tests calling main() from a worker) the handlers are not
    installed, since Python only allows them on the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    first: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.event.is_set():
            # `timeout -s INT` and a terminal can deliver one request twice (to the process and its
            # group): a second signal within a second is the same request, not "stop at once"
            if first and clock() - first[0] < SAME_REQUEST_SECONDS:
                return
            raise KeyboardInterrupt
        first.append(clock())
        stop.signal_name = signal.Signals(signum).name
        stop.event.set()
        print(f"\n{stop.reason} received. {stop.message or message}", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- the wrapper
def error_line(message: str) -> None:
    """Print one `error: ...` line on stderr (line breaks folded, control characters escaped,
    so a hostile file name cannot drive the terminal)."""
    text = " ".join(str(message).splitlines())
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    json_summary.note_error(text)
    print(f"error: {text}", file=sys.stderr, flush=True)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """--json (plumbing.json_summary): one JSON object on stdout, the human text on stderr."""
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object summing up the run on stdout (schema: docs/reports-and-logs.md); "
                             "the human text goes to stderr")


def run_script(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, *, script: str,
               kind: str) -> int:
    """run_main, and with --json the run's summary on stdout (plumbing.json_summary); kind: the
    summary's kind when the run records none (it stopped before, e.g. on bad usage)."""
    return json_summary.wrap(lambda args: run_main(body, args), argv, script=script, default_kind=kind,
                             meaning=EXIT_MEANING)


def run_main(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """_run_main with core dumps disabled for the process and the console's control characters
    neutralised (every script's main starts here)."""
    disable_core_dumps()
    with neutral_console():
        return _run_main(body, argv)


def _run_main(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's body and map every error a user can cause to one line and a code.

    - `UserError` (bad option, CSV, savepoint, config, folder): `error: ...`, its exit code (2).
    - `OSError` that escaped (a folder that cannot be used): one line, exit 2.
    - `KeyboardInterrupt` (a second Ctrl-C): one line, exit 130.
    - `BrokenPipeError` (output piped to `head`): silent, exit 0 for what was printed.
    - `SystemExit` from argparse's --help / --version: its code.
    Anything else is a bug: it propagates with its traceback.
    """
    try:
        code = int(body(argv))
        sys.stdout.flush()  # a reader that went away (`| head -1`) shows up here, not at exit
        return code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else ExitCode.USAGE
    except UserError as exc:
        error_line(str(exc))
        return int(exc.exit_code)
    except BrokenPipeError:
        _silence_broken_pipe()
        return ExitCode.OK
    except KeyboardInterrupt:
        print("Stopped at once. The savepoint is consistent: re-run the same command to resume.",
              file=sys.stderr)
        return ExitCode.INTERRUPTED
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        error_line(f"cannot use{where}: {describe_os_error(exc)}")
        return ExitCode.USAGE


def _silence_broken_pipe() -> None:
    """After the reader of stdout went away, keep Python's final flush from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
