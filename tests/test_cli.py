"""cli.py, the one command-line contract, and every script's use of it.

Unit tests of the pieces (exit codes, parser, numeric types, redaction, stop signals,
the run_main wrapper), then one parametrized test that feeds each script an unusable
folder and a corrupt input: exactly one `error:` line, exit 2, and no call to DevRev.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

import approve_plan
import create_test_sample
import devrev_client
import find_duplicates
import merge_contacts
import restore_contacts
import verify_backups
from contacts.csv_reader import CsvInputError
from devrev_api.errors import ConfigError
from helpers import TEST_TOKEN
from plumbing import cli
from plumbing.cli import ExitCode
from runs.journal import Journal, JournalError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("a, b, expected", [
    (ExitCode.OK, ExitCode.FAILED, ExitCode.FAILED),
    (ExitCode.FAILED, ExitCode.OK, ExitCode.FAILED),
    (ExitCode.FAILED, ExitCode.INTERRUPTED, ExitCode.INTERRUPTED),
    (ExitCode.INTERRUPTED, ExitCode.FAILED, ExitCode.INTERRUPTED),
    (ExitCode.INTERRUPTED, ExitCode.USAGE, ExitCode.USAGE),
    (ExitCode.USAGE, 130, ExitCode.USAGE),
    (ExitCode.OK, 0, ExitCode.OK),
])
def test_worse_keeps_the_code_that_tells_more(a, b, expected):
    assert a.worse(b) is expected


def test_exit_code_values_are_the_documented_ones():
    assert [int(c) for c in (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.INTERRUPTED)] == [0, 1, 2, 130]


def test_input_errors_of_other_modules_are_user_errors_with_exit_2():
    for kind in (CsvInputError, JournalError, ConfigError, cli.UsageError):
        assert issubclass(kind, cli.UserError) and kind("x").exit_code == ExitCode.USAGE


# --------------------------------------------------------------------------- parser and types
def _parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="tool.py")
    p.add_argument("--rate", type=cli.positive_float)
    p.add_argument("--workers", type=cli.int_between(1, 64))
    p.add_argument("--size", type=cli.int_between(1))
    return p


@pytest.mark.parametrize("argv, words", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--rate", "nan"], "finite"), (["--rate", "inf"], "finite"), (["--rate=-inf"], "finite"),
    (["--rate", "0"], "above 0"), (["--rate=-3"], "above 0"), (["--rate", "fast"], "a number"),
    (["--workers", "0"], "between 1 and 64"), (["--workers", "65"], "between 1 and 64"),
    (["--workers", "2.5"], "whole number"), (["--workers", "nan"], "whole number"),
    (["--size", "0"], "1 or more"), (["--size", ""], "whole number"),
])
def test_bad_options_are_one_usage_error_naming_the_problem(argv, words):
    with pytest.raises(cli.UsageError) as caught:
        _parser().parse_args(argv)
    message = str(caught.value)
    assert words in message and "\n" not in message and message.endswith("(see tool.py --help)")


@pytest.mark.parametrize("script", ["merge_contacts", "find_duplicates"])
@pytest.mark.parametrize("value", ["1e-9", "0.5", "1e-300", "100001"])
def test_a_rate_limit_outside_one_to_100000_calls_a_minute_is_refused(script, value, capsys):
    """A pace of 1e-9 calls a minute overflowed a timestamp; 0.01 waited 100 minutes in silence."""
    module = __import__(script)
    assert module.main(["--sandbox", "--rate-limit", value, "--output", "x.csv"] if script == "find_duplicates"
                       else ["--sandbox", "--preview", "--rate-limit", value]) == 2
    assert "must be between 1 and 100000" in capsys.readouterr().err


def test_an_abbreviated_option_is_refused_not_guessed():
    """`--skip` must never silently mean `--skip-preview-check` on a tool that changes data."""
    p = cli.ArgumentParser(prog="tool.py")
    p.add_argument("--skip-preview-check", action="store_true")
    with pytest.raises(cli.UsageError, match="unrecognized arguments: --skip"):
        p.parse_args(["--skip"])


def test_good_numbers_are_parsed():
    args = _parser().parse_args(["--rate", " 1.5 ", "--workers", "64", "--size", "1000000"])
    assert (args.rate, args.workers, args.size) == (1.5, 64, 1000000)


# --------------------------------------------------------------------------- redaction
def test_redactor_masks_a_long_token_everywhere():
    redact = cli.Redactor(TEST_TOKEN)
    text = f"Bearer {TEST_TOKEN}; token={TEST_TOKEN}; glued:x{TEST_TOKEN}y"
    assert TEST_TOKEN not in redact(text)
    assert redact(text).count("***") == 3


def test_redactor_masks_a_short_secret_only_as_a_whole_word():
    redact = cli.Redactor("abc")
    assert redact("abc abcd xabc abc. key=abc") == "*** abcd xabc ***. key=***"


def test_redactor_removes_url_query_strings_but_keeps_the_path():
    redact = cli.Redactor()
    assert redact("fetch https://files.example/blob/7?sig=SECRET&expires=9#frag failed") \
        == "fetch https://files.example/blob/7?<redacted>#frag failed"
    assert redact('"GET /blobs/5?expires=1&sig=SECRET HTTP/1.1" 200') == '"GET /blobs/5?<redacted> HTTP/1.1" 200'
    assert redact("is it done? yes") == "is it done? yes"


def test_formatter_redacts_arguments_and_tracebacks():
    formatter = cli.RedactingFormatter("%(message)s", cli.Redactor(TEST_TOKEN))
    try:
        raise ValueError(f"bad token {TEST_TOKEN} at https://x.example/a?sig=S3CRET")
    except ValueError:
        record = logging.LogRecord("merge", logging.ERROR, __file__, 1, "failed with %s", (TEST_TOKEN,),
                                   sys.exc_info())
    text = formatter.format(record)
    assert "Traceback" in text and "ValueError" in text
    assert TEST_TOKEN not in text and "S3CRET" not in text


def test_run_logging_keeps_third_party_lines_off_the_console_and_the_token_out(tmp_path, capsys):
    with cli.run_logging(str(tmp_path / "logs"), "merge", "run1", TEST_TOKEN) as path:
        logging.getLogger("merge").info("ours %s", TEST_TOKEN)
        logging.getLogger("urllib3.connectionpool").warning("theirs https://h.example/p?sig=X1")
    err = capsys.readouterr().err
    assert "ours ***" in err and "theirs" not in err and "[run1]" in err
    text = open(path, encoding="utf-8").read()
    assert "ours ***" in text and "theirs https://h.example/p?<redacted>" in text
    assert TEST_TOKEN not in text and "X1" not in text
    assert os.stat(path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name, ours", [("merging.engine", True), ("runs.support", True), ("merge_contacts", True),
                                        ("merging.a_module_added_later", True), ("urllib3.connectionpool", False),
                                        ("requests", False), ("asyncio", False), ("concurrent.futures", False)])
def test_a_logger_is_ours_by_its_module_name_without_a_list_to_keep(name, ours):
    """Loggers are named by module (`getLogger(__name__)`): a new module's lines reach the console."""
    record = logging.LogRecord(name, logging.INFO, __file__, 1, "x", (), None)
    assert cli.is_own_record(record) is ours


def test_the_sandbox_says_where_its_emulator_listens_on_the_console(tmp_path, monkeypatch, capsys):
    """Regression: the `run` logger was missing from a hand-kept list, so this line reached only the log file."""
    import merge_contacts
    monkeypatch.chdir(tmp_path)
    assert merge_contacts.main(["--sandbox", "--check"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"INFO \[[^]]+\] sandbox DevRev emulator on http://127\.0\.0\.1:\d+", err), err


@pytest.mark.parametrize("script", ["merge_contacts", "restore_contacts", "find_duplicates", "create_test_sample",
                                    "verify_backups", "approve_plan"])
def test_every_script_answers_version_with_the_one_in_pyproject(script, capsys):
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    assert __import__(script).main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"{script}.py (devrev-contact-merge) {version}"


def test_run_logging_refuses_an_unusable_folder_as_a_usage_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(cli.UsageError, match="--log-dir"):
        with cli.run_logging(str(tmp_path / "a-file" / "logs"), "merge", "run1"):
            pass


def test_check_writable_dir_creates_a_private_folder_or_names_the_option(tmp_path):
    folder = cli.check_writable_dir(str(tmp_path / "new" / "reports"), "--report-dir")
    assert os.path.isdir(folder) and os.listdir(folder) == []
    (tmp_path / "a-file").write_text("")
    with pytest.raises(cli.UsageError, match=r"^--backup-dir .*a-file/b: a file is in the way"):
        cli.check_writable_dir(str(tmp_path / "a-file" / "b"), "--backup-dir")


# --------------------------------------------------------------------------- stop signals
@pytest.mark.parametrize("signum, name, reason", [(signal.SIGTERM, "SIGTERM", "SIGTERM"),
                                                  (signal.SIGINT, "SIGINT", "Ctrl-C")])
def test_graceful_stop_records_which_signal_then_a_second_one_stops_at_once(signum, name, reason, capsys):
    stop = cli.StopSignal()
    before = signal.getsignal(signum)
    now = [100.0]
    with cli.graceful_stop(stop, "bye", clock=lambda: now[0]):
        os.kill(os.getpid(), signum)
        assert stop.event.wait(5)
        assert stop.is_set() and stop.signal_name == name and stop.reason == reason
        os.kill(os.getpid(), signum)      # the same request delivered twice (`timeout -s INT`): ignored
        now[0] += 2.0
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
            threading.Event().wait(5)  # the handler raises here
    assert signal.getsignal(signum) is before
    assert f"{reason} received. bye" in capsys.readouterr().err


def test_a_stop_without_a_signal_says_so():
    stop = cli.StopSignal()
    stop.set()
    assert stop.is_set() and stop.signal_name is None and stop.reason == "a stop request"


def test_graceful_stop_off_the_main_thread_installs_nothing():
    seen = []

    def body():
        with cli.graceful_stop(cli.StopSignal()) as stop:
            seen.append(stop)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert len(seen) == 1 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --------------------------------------------------------------------------- run_main
def _raises(exc):
    def body(argv):
        raise exc
    return body


@pytest.mark.parametrize("body, code, err_start", [
    (lambda argv: 0, ExitCode.OK, ""),
    (lambda argv: ExitCode.FAILED, ExitCode.FAILED, ""),
    (_raises(cli.UsageError("bad\nthing \x1b[31m")), ExitCode.USAGE, "error: bad thing \\x1b[31m\n"),
    (_raises(CsvInputError("line 2: EMAIL is empty")), ExitCode.USAGE, "error: line 2: EMAIL is empty\n"),
    (_raises(PermissionError(13, "Permission denied", "/x")), ExitCode.USAGE,
     "error: cannot use /x: not writable (Permission denied)\n"),
    (_raises(KeyboardInterrupt()), ExitCode.INTERRUPTED, "Stopped at once."),
    (_raises(SystemExit(0)), ExitCode.OK, ""),
])
def test_run_main_maps_errors_to_one_line_and_a_code(body, code, err_start, capsys):
    assert cli.run_main(body, []) == code
    err = capsys.readouterr().err
    assert err.startswith(err_start) and (err_start or err == "")
    assert "Traceback" not in err


def test_run_main_lets_a_bug_through():
    with pytest.raises(ZeroDivisionError):
        cli.run_main(_raises(ZeroDivisionError()), [])


@pytest.mark.parametrize("sets", [3, 3000])  # output flushed at exit / far more than a pipe buffer holds
def test_status_piped_to_head_does_not_raise_broken_pipe(sets, tmp_path):
    savepoint = str(tmp_path / "j.sqlite3")
    journal = Journal(savepoint, "seed")
    for n in range(sets):
        journal.set_status(f"k{n}", f"person{n}@x.example", "merged")
    journal.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as `| head -0` would be
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as usual
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "merge_contacts.py"), "--status", "--savepoint",
                           savepoint], cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, timeout=60, env=env)
    os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == b""


def test_sigterm_is_reported_as_sigterm_in_the_log_and_the_report(tmp_path, make_sandbox):
    from helpers import sigterm_mid_merge
    run, code, _, err = sigterm_mid_merge(tmp_path, make_sandbox)
    assert code == 130, err.decode()
    assert b"SIGTERM received" in err and b"Interrupted by SIGTERM" in err and b"Ctrl-C" not in err
    report = run.latest_report()
    assert report["interrupted"] is True and report["interrupted_by"] == "SIGTERM"
    notes = [s.get("note") for s in report["sets"] if s["status"] == "interrupted"]
    assert notes == ["stopped by SIGTERM; re-run to resume"]
    (log,) = (tmp_path / "logs").glob("merge_*.log")
    assert "interrupted by SIGTERM" in log.read_text()


# --------------------------------------------------------------------------- every script
BAD_CSV = "REV_USER_ID,EMAIL\r\nREVU-a1,a@x.example\r\n"  # no EXTERNAL_REF column


def _merge_sandbox(tmp, case):
    common = ["--sandbox", "--preview", "--savepoint", str(tmp / "sp" / "j.sqlite3")]
    if case == "unwritable folder":
        return [*common, "--log-dir", str(tmp / "a-file" / "logs")]
    return [*common, "--csv", str(tmp / "bad.csv"), "--log-dir", str(tmp / "logs")]


def _merge_real(tmp, case):
    common = ["--csv", str(tmp / "good.csv"), "--report-dir", str(tmp / "reports"), "--log-dir", str(tmp / "logs"),
              "--skip-preview-check"]
    if case == "unwritable folder":
        return [*common, "--backup-dir", str(tmp / "a-file" / "backups"), "--savepoint", str(tmp / "sp" / "j.sqlite3")]
    (tmp / "corrupt.sqlite3").write_bytes(b"this is not a database" * 100)
    return [*common, "--backup-dir", str(tmp / "backups"), "--savepoint", str(tmp / "corrupt.sqlite3")]


def _merge_preview_savepoint(tmp, case):
    common = ["--csv", str(tmp / "good.csv"), "--log-dir", str(tmp / "logs"), "--preview"]
    if case == "unwritable folder":
        return [*common, "--report-dir", str(tmp / "a-file" / "reports")]
    (tmp / "corrupt.sqlite3").write_bytes(b"this is not a database" * 100)
    return [*common, "--report-dir", str(tmp / "reports"), "--savepoint", str(tmp / "corrupt.sqlite3")]


def _sample(tmp, case):
    if case == "unwritable folder":
        return ["--input", str(tmp / "good.csv"), "--output", str(tmp / "a-file" / "s.csv"), "--size", "2"]
    return ["--input", str(tmp / "bad.csv"), "--output", str(tmp / "s.csv"), "--size", "2"]


def _verify(tmp, case):
    (tmp / "backups" / "b1").mkdir(parents=True, exist_ok=True)
    if case == "unwritable folder":
        return ["--backup-dir", str(tmp / "backups"), "--report-dir", str(tmp / "a-file" / "reports")]
    return ["--backup-dir", str(tmp / "good.csv"), "--report-dir", str(tmp / "reports")]


def _restore_preview(tmp, case):
    common = ["--preview", "--sandbox", "--report-dir", str(tmp / "reports")]
    if case == "unwritable folder":
        (tmp / "backups" / "b1").mkdir(parents=True, exist_ok=True)
        return [*common, "--backup-dir", str(tmp / "backups"), "--log-dir", str(tmp / "a-file" / "logs")]
    return [*common, "--backup-dir", str(tmp / "good.csv"), "--log-dir", str(tmp / "logs")]


def _restore_real(tmp, case):
    (tmp / "backups" / "b1").mkdir(parents=True, exist_ok=True)   # a folder that does not verify
    common = ["--backup-dir", str(tmp / "backups"), "--log-dir", str(tmp / "logs"), "--skip-preview-check"]
    if case == "unwritable folder":
        return [*common, "--report-dir", str(tmp / "a-file" / "reports"), "--savepoint", str(tmp / "sp" / "r.sqlite3")]
    (tmp / "corrupt.sqlite3").write_bytes(b"this is not a database" * 100)
    return [*common, "--report-dir", str(tmp / "reports"), "--savepoint", str(tmp / "corrupt.sqlite3")]


def _approve(tmp, case):
    if case == "unwritable folder":   # the plan's folder: its signature cannot be written beside it
        return [str(tmp / "a-file" / "plan.json"), "--key", str(tmp / "key"), "--identity", "b@x.example", "--yes"]
    return ["--show", str(tmp / "good.csv")]   # not a preview's JSON


def _find(tmp, case):
    if case == "unwritable folder":
        return ["--output", str(tmp / "a-file" / "found.csv"), "--log-dir", str(tmp / "logs")]
    return ["--output", str(tmp / "good.csv"), "--log-dir", str(tmp / "logs")]  # exists, and no --force


# Every script of the suite; a new script joins this list.
SCRIPTS = {
    "merge_contacts --sandbox --preview": (merge_contacts.main, _merge_sandbox),
    "merge_contacts real run": (merge_contacts.main, _merge_real),
    "merge_contacts --preview": (merge_contacts.main, _merge_preview_savepoint),
    "create_test_sample": (create_test_sample.main, _sample),
    "verify_backups": (verify_backups.main, _verify),
    "restore_contacts --sandbox --preview": (restore_contacts.main, _restore_preview),
    "restore_contacts real run": (restore_contacts.main, _restore_real),
    "find_duplicates": (find_duplicates.main, _find),
    "approve_plan": (approve_plan.main, _approve),
}


@pytest.mark.parametrize("case", ["unwritable folder", "corrupt input"])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_refuses_bad_folders_and_input_with_one_line_and_exit_2(
        script, case, tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox({})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
    clients = []
    real_init = devrev_client.DevRevClient.__init__

    def counting_init(self, *args, **kwargs):  # the --sandbox emulator is only reached through a client
        clients.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(devrev_client.DevRevClient, "__init__", counting_init)
    (tmp_path / "a-file").write_text("a file where a folder is expected")
    (tmp_path / "bad.csv").write_text(BAD_CSV)
    (tmp_path / "good.csv").write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\r\nREVU-a1,a@x.example,REVU-a1\r\n"
                                       "REVU-b2,a@x.example,user_b2\r\n")
    main, argv = SCRIPTS[script]
    code = main(argv(tmp_path, case))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == ExitCode.USAGE, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    assert clients == [] and sandbox.request_log == []
    assert not (tmp_path / ".sandbox").exists()


def test_env_example_names_exactly_the_scripts_that_read_env():
    readers = sorted(name for name in ("merge_contacts.py", "create_test_sample.py", "verify_backups.py",
                                       "find_duplicates.py", "restore_contacts.py")
                     if "load_dotenv(" in open(os.path.join(ROOT, name), encoding="utf-8").read())
    assert readers == ["find_duplicates.py", "merge_contacts.py", "restore_contacts.py"]
    header = open(os.path.join(ROOT, ".env.example"), encoding="utf-8").read().split("\n\n")[0]
    assert "Only merge_contacts.py, find_duplicates.py and restore_contacts.py read .env" in " ".join(
        header.replace("#", " ").split())


@pytest.mark.parametrize("argv0, expected", [("/usr/bin/devrev-find-duplicates", "devrev-merge-contacts"),
                                             ("find_duplicates.py", "python3 merge_contacts.py")])
def test_hints_name_the_command_as_the_admin_runs_it(argv0, expected, monkeypatch):
    """An installed command's hints name installed commands; a checkout's name its scripts."""
    monkeypatch.setattr(sys, "argv", [argv0])
    assert cli.command_for("merge_contacts.py") == expected
