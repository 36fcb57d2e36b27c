"""--log-format jsonl: the log file as one JSON object a line, redacted exactly as the text format is.

A log shipper reads these lines without parsing text; the token and presigned signatures must not
reach it either, whether they sit in a message or in an exception's traceback."""
from __future__ import annotations

import json
import logging
import re

import pytest

from helpers import TEST_TOKEN
from plumbing import cli

KEYS = {"time", "level", "logger", "run_id", "subject", "message"}


def _lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh.read().splitlines()]


def test_each_line_is_one_json_object_with_the_keys_and_the_subject_inside_log_subject(tmp_path, capsys):
    with cli.run_logging(str(tmp_path / "logs"), "merge", "run1", TEST_TOKEN, log_format="jsonl") as path:
        logging.getLogger("merging.run").info("starting %d sets", 3)
        with cli.log_subject("ann@example.com"):
            logging.getLogger("merging.engine").warning("moved %s", "ticket TKT-1")
    first, second = _lines(path)
    assert set(first) == KEYS and set(second) == KEYS
    assert first["message"] == "starting 3 sets" and first["level"] == "INFO" and first["logger"] == "merging.run"
    assert first["run_id"] == "run1" and first["subject"] is None
    assert second["subject"] == "ann@example.com" and second["message"] == "moved ticket TKT-1"
    assert second["level"] == "WARNING"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "INFO [run1] starting 3 sets" in capsys.readouterr().err   # the console stays text


def test_the_token_and_presigned_query_strings_never_reach_a_jsonl_file(tmp_path):
    url = "https://bucket.s3.example/blob/1?X-Amz-Signature=abc123SIG&X-Amz-Credential=CRED9"
    with cli.run_logging(str(tmp_path / "logs"), "merge", "run1", TEST_TOKEN, log_format="jsonl") as path:
        with cli.log_subject(f"token {TEST_TOKEN}"):
            logging.getLogger("devrev_client").info("token %s fetched %s", TEST_TOKEN, url)
        logging.getLogger("urllib3.connectionpool").debug('"GET /blob/1?X-Amz-Signature=abc123SIG HTTP/1.1" 200')
        logging.getLogger("merging.run").info("escape \x1b[31m and \u202e")
    text = open(path, encoding="utf-8").read()
    assert TEST_TOKEN not in text and "abc123SIG" not in text and "CRED9" not in text
    ours, theirs, controls = _lines(path)
    assert ours["message"] == "token *** fetched https://bucket.s3.example/blob/1?<redacted>"
    assert ours["subject"] == "token ***"
    assert theirs["message"] == '"GET /blob/1?<redacted> HTTP/1.1" 200'
    assert controls["message"] == "escape \\x1b[31m and \\u202e"   # neutralised as in the text format


def test_an_exceptions_traceback_is_in_exc_and_redacted(tmp_path):
    with cli.run_logging(str(tmp_path / "logs"), "merge", "run1", TEST_TOKEN, log_format="jsonl") as path:
        try:
            raise ValueError(f"bad call with {TEST_TOKEN} to https://h.example/p?X-Amz-Signature=S1G")
        except ValueError:
            logging.getLogger("merging.engine").exception("the set failed")
    text = open(path, encoding="utf-8").read()
    assert TEST_TOKEN not in text and "S1G" not in text
    (line,) = _lines(path)
    assert set(line) == KEYS | {"exc"} and line["message"] == "the set failed"
    assert line["exc"].startswith("Traceback") and "ValueError: bad call with *** to https://h.example/p?<redacted>" \
        in line["exc"]


def test_the_text_format_is_unchanged_and_the_default(tmp_path):
    with cli.run_logging(str(tmp_path / "logs"), "merge", "run1", TEST_TOKEN) as path:
        with cli.log_subject("ann@example.com"):
            logging.getLogger("merging.engine").info("ours %s", TEST_TOKEN)
    text = open(path, encoding="utf-8").read()
    assert re.search(r"^\S+ \S+ \[run1\] INFO \S+ merging\.engine: ann@example\.com: ours \*\*\*$", text, re.M), text


def test_an_unknown_format_is_a_usage_error_and_the_option_offers_both():
    with pytest.raises(cli.UsageError, match="--log-format"):
        with cli.run_logging(None, "merge", "run1", log_format="xml"):
            pass
    parser = cli.ArgumentParser(prog="x")
    cli.add_log_format_option(parser)
    assert parser.parse_args([]).log_format == "text"
    assert parser.parse_args(["--log-format", "jsonl"]).log_format == "jsonl"
    with pytest.raises(cli.UsageError):
        parser.parse_args(["--log-format", "xml"])


def test_a_report_holds_no_token_and_no_terminal_escape_from_a_hostile_answer(tmp_path):
    """The trial: a rev-users.create answer whose display_id held the token and an OSC sequence
    put both into the restore report's JSON and CSV. Reports are scrubbed like the log."""
    from operator_view import reports
    token = "tok_" + "s3cr3t" * 8
    with cli.run_logging(str(tmp_path / "logs"), "t", "run1", token):
        hostile = f"REVU-{token}\x1b]0;owned\x07"
        json_path, csv_path = reports.write_report(str(tmp_path / "r"), "x", {"sets": [{"id": hostile}]},
                                                   ["id"], [{"id": hostile}])
    for path in (json_path, csv_path, reports.html_path(json_path)):
        text = open(path, encoding="utf-8").read()
        assert token not in text and "\x1b" not in text and "\x07" not in text, path
