"""Hostile API data, end to end through merge_contacts.main against the emulator.

What DevRev (or a proxy in front of it) might send on a bad day: attachment names built
to escape the backup folder or drive a terminal, non-JSON and HTML error pages, JSON cut
off mid-answer, a 301 on a write, a listing whose cursor never moves, a download shorter
than its declared size. Each must end without a hang (every run has a deadline), without
a crash (exit 0 or 1, one readable line per failed set in the report), and without a
partial change (no ticket or conversation ever loses its customer; a failed set resumes:
a re-run without the fault ends exactly like a clean run).
"""
from __future__ import annotations

import base64
import os
import threading

import pytest

import backup
from backup_checks import verification
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Faults, Scripted
from helpers import (
    MergeGuard,
    MergeRun,
    expected_after_merge,
    journal_problems,
    normalized,
    owners_of,
    ownership_violations,
)
from merging import preflight

DEADLINE_S = 60


def guarded(fn, *args, seconds: float = DEADLINE_S):
    """fn(*args) on a helper thread with a deadline: a hang fails the test instead of the suite.
    (The emulator's scripted queues are finite, so a well-behaved tool always gets past them.)"""
    result: dict = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"hung: still running after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


class Scenario:
    """A small dataset on an emulator, previewed, with its expected clean end state."""

    def __init__(self, tmp_path, monkeypatch, make_sandbox, dataset=None, prepare=None, **sandbox_kw):
        self.dataset = dataset or build_dataset(2, seed=41, tickets=(2, 3), conversations=(1, 2), comments=(0, 1),
                                                two_duplicate_sets=0, skipped=False)
        self.guard = MergeGuard()
        self.sandbox = make_sandbox(self.dataset.seed, on_request=self.guard, **sandbox_kw)
        if prepare is not None:
            prepare(self.sandbox)
        self.run = MergeRun(tmp_path, self.sandbox, self.dataset, monkeypatch)
        # the preflight's reads would take the answers scripted for the merge
        # (tests/test_preflight_and_canary.py covers the preflight)
        monkeypatch.setattr(preflight, "at_start", lambda client, merge_set: None)
        # ...and so would the run's probe of works.list's custom_fields filter (as this tenant answers it)
        monkeypatch.setattr(preflight, "probe_custom_fields_filter", lambda client, contact_id: False)
        self.tmp_path = tmp_path
        self.owners = owners_of(self.sandbox, self.dataset)
        self.expected = self.expect()
        assert guarded(self.run.preview) == 0

    def expect(self) -> dict:
        before = normalized(self.sandbox.dump())
        return expected_after_merge(before, self.sandbox, self.dataset, {ms["email"] for ms in self.dataset.merge_sets})

    def first_duplicate_tickets(self) -> list[dict]:
        dup = self.sandbox.key_id(self.dataset.merge_sets[0]["duplicates"][0])
        dump = self.sandbox.dump()
        return [w for w in dump["works"].values() if dup in [u["id"] for u in w["reported_by"]]]

    def fails_cleanly(self, capsys, *words: str, code: int = 1) -> dict:
        """One run meets the fault: exit 1 (75 when DevRev's 5xx outlasted the retries: a later
        run may finish it alone), one failed set with a one-line error naming it."""
        capsys.readouterr()
        assert guarded(self.run.run, "--workers", "1") == code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        report = self.run.latest_report()
        failed = [s for s in report["sets"] if s["status"] == "failed"]
        assert len(failed) == 1, [(s["email"], s["status"]) for s in report["sets"]]
        error = failed[0]["error"]
        assert "\n" not in error and "\r" not in error and len(error) < 600, error
        for word in words:
            assert word in error, (word, error)
        assert ownership_violations(self.sandbox, self.owners) == [] and self.guard.violations == []
        # consistent; an intent may stay open in the failed set (the re-run re-checks it)
        problems = journal_problems(self.tmp_path / "savepoints" / "j.sqlite3")
        assert all(p.startswith("open intent") for p in problems), problems
        return failed[0]

    def assert_nothing_written_for(self, email: str) -> None:
        """No write attempt touched the set's contacts or anything they are on."""
        ms = next(m for m in self.dataset.merge_sets if m["email"] == email)
        contacts = {self.sandbox.key_id(ms["primary"])} | {self.sandbox.key_id(d) for d in ms["duplicates"]}
        objects = {oid for oid, owners in self.owners.items() if owners & contacts}
        for entry in self.sandbox.write_attempts():
            body = entry["body"] if isinstance(entry["body"], dict) else {}
            assert not {body.get("id"), body.get("primary_user"), body.get("secondary_user")} & (contacts | objects)

    def ends_clean(self) -> None:
        """The re-run (fault gone) ends exactly like a clean run, every backup whole."""
        assert guarded(self.run.run) == 0
        assert normalized(self.sandbox.dump()) == self.expected
        assert ownership_violations(self.sandbox, self.owners) == []
        assert self.guard.merges and self.guard.violations == []
        folders = self.run.backups()
        assert folders and not [f for f in folders if f.endswith(backup.PARTIAL_SUFFIX)]
        assert all(verification.verify_backup(f).ok for f in folders)
        assert journal_problems(self.tmp_path / "savepoints" / "j.sqlite3") == []


# --------------------------------------------------------------------------- attachment names
HOSTILE_NAMES = [
    "../../../../../../etc/passwd", "..\\..\\..\\Windows\\System32\\config\\SAM", "/absolute/evil.txt",
    "x/../../../y.txt", "..", ".", "", " ", ".bashrc", "%2e%2e%2fetc%2fpasswd",
    "\x1b[2J\x1b]0;owned\x07\x1b[31mred.txt", "bell\x07and\x08backspace.log", "new\nline\r\nname.txt",
    "nul\x00byte.bin", "\u202egnp.exe", "zero\u200bwidth\u2060joiner.pdf", "e\u0301\u0301\u0301\u0301.txt",
    "\U0001f44d\U0001f3fd thumbs.png", "\ufb01le\u212a.txt", "a" * 5000 + ".pdf", "\u00e9" * 400 + ".png",
    "\u4e2d\u6587\u6587\u4ef6\u540d" * 40 + ".docx", "CON", "aux.txt", "trailing.dot.", "same.txt", "same.txt",
    "tab\there.txt",
]


def _hostile_seed() -> tuple:
    dataset = build_dataset(2, seed=44, tickets=(2, 2), conversations=(1, 1), comments=(2, 2), attachment_rate=1.0,
                            attachment_size=(10, 400), two_duplicate_sets=0, skipped=False)
    names = iter(HOSTILE_NAMES * 4)
    used = []
    for holder in dataset.seed["tickets"] + dataset.seed["conversations"]:
        for spec in [holder, *holder.get("comments", [])]:
            for art in spec.get("artifacts", []):
                art["name"] = next(names)
                used.append(art["name"])
    return dataset, used


def _hostile_display_ids(sandbox) -> None:
    """Display ids (used as folder names in backups) that try to escape or drive a terminal."""
    hostile = ["../../../TKT-1", "/etc/cron.d/TKT-2", "CONV-\x1b[31m3\x1b[0m", "..\\..\\CONV-4"]
    objects = list(sandbox.state.works.values())[:2] + list(sandbox.state.conversations.values())[:2]
    for obj, display_id in zip(objects, hostile):
        obj["display_id"] = display_id


def test_hostile_attachment_names_stay_inside_the_backup_folder(tmp_path, monkeypatch, make_sandbox):
    dataset, used = _hostile_seed()
    assert set(used) >= set(HOSTILE_NAMES) - {""} or len(used) >= len(HOSTILE_NAMES)
    s = Scenario(tmp_path, monkeypatch, make_sandbox, dataset, prepare=_hostile_display_ids)
    assert guarded(s.run.run) == 0
    assert normalized(s.sandbox.dump()) == s.expected
    assert s.guard.merges and s.guard.violations == []
    root = os.path.realpath(tmp_path / "backups")
    folders = s.run.backups()
    assert folders and all(verification.verify_backup(f).ok for f in folders)
    saved = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            assert os.path.realpath(full).startswith(root + os.sep)
            assert not os.path.islink(full)
            assert len(name.encode("utf-8")) <= 255, name
            assert name.isprintable() and not name.startswith(".") and "/" not in name and "\\" not in name, name
        saved += sum(1 for n in filenames if "attachments" in dirpath)
    assert saved == len(s.sandbox.dump()["artifacts"])  # every attachment saved
    # nothing was written anywhere but the tool's own folders
    assert sorted(os.listdir(tmp_path)) == ["backups", "contacts.csv", "logs", "reports", "savepoints"]


# --------------------------------------------------------------------------- bad answers to writes
WRITE_FAULTS = {
    "non-JSON 500 on works.update, every retry":
        ("works.update", [Scripted(500, "Internal Server Error\n\tat Foo.bar()", content_type="text/plain")] * 6,
         ("works.update", "HTTP 500 with a non-JSON body (text/plain)")),
    "non-JSON 400 on works.update":
        ("works.update", [Scripted(400, "<html><body>Bad Request</body></html>", content_type="text/html")],
         ("works.update", "HTTP 400 with a non-JSON body (text/html)")),
    "HTML 502 page on conversations.update, every retry":
        ("conversations.update",
         [Scripted(502, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                   content_type="text/html")] * 6,
         ("conversations.update", "HTTP 502")),
    "301 with Location on works.update":
        ("works.update", [Scripted(301, {"message": "moved"},
                                   headers={"Location": "/works.update?id=don:core:dvrv-us-1:devo/X:ticket/99"})],
         ("works.update", "301 (moved)")),
}


@pytest.mark.parametrize("case", list(WRITE_FAULTS))
def test_bad_answer_to_a_write_fails_the_set_cleanly_and_resumes(case, tmp_path, monkeypatch, make_sandbox, capsys,
                                                                 fast_backoff):  # noqa: F811
    s = Scenario(tmp_path, monkeypatch, make_sandbox)
    endpoint, answers, words = WRITE_FAULTS[case]
    s.sandbox.script(endpoint, *answers)
    s.fails_cleanly(capsys, *words, code=75 if answers[0].status >= 500 else 1)
    assert not s.sandbox._scripted[endpoint]    # every canned answer was met (the queue is finite)
    s.ends_clean()


def test_html_502_pages_and_cut_off_answers_are_retried_to_a_clean_end(tmp_path, monkeypatch, make_sandbox,
                                                                        fast_backoff):  # noqa: F811
    """Transient garbage on reads, on a set-style write and on rev-users.merge (never retried
    by the client: the engine re-reads the duplicate before asking again)."""
    s = Scenario(tmp_path, monkeypatch, make_sandbox, faults=Faults(html_502_rate=0.1, seed=5))
    s.sandbox.script("works.list", Scripted(200, '{"works": [', content_type="application/json"))
    s.sandbox.script("timeline-entries.list", Scripted(200, "<html>maintenance</html>", content_type="text/html"))
    s.sandbox.script("works.update", Scripted(200, '{"work": {"id": ', content_type="application/json"))
    s.sandbox.script("rev-users.merge", Scripted(502, "<html>502 Bad Gateway</html>", content_type="text/html"),
                     Scripted(200, "{", content_type="application/json"))
    assert guarded(s.run.run) == 0
    assert normalized(s.sandbox.dump()) == s.expected
    assert sum(1 for e in s.sandbox.request_log if e.get("fault") == "502") > 0
    assert not any(s.sandbox._scripted.values())
    assert ownership_violations(s.sandbox, s.owners) == []
    assert s.guard.merges and s.guard.violations == []
    assert all(verification.verify_backup(f).ok for f in s.run.backups())


# --------------------------------------------------------------------------- bad answers to reads
def test_json_cut_off_on_every_retry_of_a_read_fails_the_set_cleanly(tmp_path, monkeypatch, make_sandbox, capsys,
                                                                     fast_backoff):  # noqa: F811
    s = Scenario(tmp_path, monkeypatch, make_sandbox)
    s.sandbox.script("works.list", *[Scripted(200, '{"works": [', content_type="application/json")] * 6)
    failed = s.fails_cleanly(capsys, "works.list", "unreadable answer")
    s.assert_nothing_written_for(failed["email"])
    s.ends_clean()


def test_listing_that_repeats_its_cursor_fails_the_set_cleanly(tmp_path, monkeypatch, make_sandbox, capsys):
    s = Scenario(tmp_path, monkeypatch, make_sandbox)
    tickets = s.first_duplicate_tickets()
    assert len(tickets) >= 2
    s.sandbox.script("works.list", Scripted(200, {"works": [tickets[0]], "next_cursor": "c-stuck"}),
                     Scripted(200, {"works": [tickets[1]], "next_cursor": "c-stuck"}))
    failed = s.fails_cleanly(capsys, "works.list", "same page cursor twice")
    s.assert_nothing_written_for(failed["email"])
    s.sandbox._scripted.clear()
    s.ends_clean()


def test_empty_pages_with_a_stuck_cursor_do_not_hide_tickets(tmp_path, monkeypatch, make_sandbox):
    """An empty page whose cursor repeats ends the listing (the client's documented guard).
    If that lie comes while the duplicate is backed up, the tool must still find and move
    every ticket (the verify step lists again) before it merges anything."""
    s = Scenario(tmp_path, monkeypatch, make_sandbox)
    s.sandbox.script("works.list", Scripted(200, {"works": [], "next_cursor": "c-empty"}),
                     Scripted(200, {"works": [], "next_cursor": "c-empty"}))
    assert guarded(s.run.run, "--workers", "1") == 0
    assert normalized(s.sandbox.dump()) == s.expected
    assert ownership_violations(s.sandbox, s.owners) == []
    assert s.guard.merges and s.guard.violations == []
    assert all(verification.verify_backup(f).ok for f in s.run.backups())


def _lie_at_verification(tmp_path, monkeypatch, make_sandbox):
    """Right after the last move, the integration files a ticket under the duplicate, and the
    listing the verify step reads answers empty pages with a stuck cursor (which the client
    takes as the end of the listing)."""
    dataset = build_dataset(1, seed=41, tickets=(2, 2), conversations=(0, 0), comments=(0, 0),
                            two_duplicate_sets=0, skipped=False)
    dup_key = dataset.merge_sets[0]["duplicates"][0]
    state = {"moves": 0}
    guard = MergeGuard()

    def hook(sandbox, entry):
        guard(sandbox, entry)
        if entry["endpoint"] == "works.update" and entry.get("applied"):
            state["moves"] += 1
            if state["moves"] == 2:
                state["ticket"] = sandbox.add_ticket({"title": "filed mid-run", "reported_by": [dup_key],
                                                      "owned_by": ["agent1"]})
                sandbox.script("works.list", Scripted(200, {"works": [], "next_cursor": "c-empty"}),
                               Scripted(200, {"works": [], "next_cursor": "c-empty"}))

    sandbox = make_sandbox(dataset.seed, on_request=hook)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert guarded(run.preview) == 0
    code = guarded(run.run, "--workers", "1")
    return sandbox, dataset, state, guard, code


def test_ticket_hidden_by_a_stuck_empty_listing_still_ends_on_the_primary(tmp_path, monkeypatch, make_sandbox):
    sandbox, dataset, state, guard, code = _lie_at_verification(tmp_path, monkeypatch, make_sandbox)
    assert code in (0, 1)
    dump = sandbox.dump()
    dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    reporters = [u["id"] for u in dump["works"][state["ticket"]]["reported_by"]]
    # either the duplicate was not merged (the set failed) or the hidden ticket was moved after all
    assert not dump["rev_users"][dup]["_retired"] or reporters == [sandbox.key_id(dataset.merge_sets[0]["primary"])]


def test_stuck_empty_listing_during_verification_never_lets_a_merge_through(tmp_path, monkeypatch, make_sandbox):
    """The listings that prove a duplicate owns nothing are strict: an empty page repeating
    its cursor fails the set instead of passing for "nothing left"."""
    sandbox, dataset, state, guard, code = _lie_at_verification(tmp_path, monkeypatch, make_sandbox)
    assert guard.violations == []
    assert code == 1


# --------------------------------------------------------------------------- short download
def test_download_shorter_than_declared_fails_the_set_and_changes_nothing(tmp_path, monkeypatch, make_sandbox,
                                                                          capsys):
    dataset = build_dataset(2, seed=41, tickets=(2, 3), conversations=(1, 2), comments=(0, 1),
                            two_duplicate_sets=0, skipped=False)
    dup_key = dataset.merge_sets[0]["duplicates"][0]
    ticket = next(t for t in dataset.seed["tickets"] if t["reported_by"] == [dup_key] or dup_key in t["reported_by"])
    content = b"only forty bytes of a much bigger file.."
    ticket.setdefault("comments", []).append({"by": dup_key, "body": "see attached", "artifacts": [
        {"number": 9901, "name": "contract.pdf", "type": "application/pdf",
         "content_b64": base64.b64encode(content).decode(), "declared_size": 4000}]})
    s = Scenario(tmp_path, monkeypatch, make_sandbox, dataset)
    before = s.sandbox.dump()
    failed = s.fails_cleanly(capsys, "contract.pdf", "shorter than its declared 4000")
    assert failed["email"] == dataset.merge_sets[0]["email"]
    s.assert_nothing_written_for(failed["email"])
    victim = {s.sandbox.key_id(dataset.merge_sets[0]["primary"]), s.sandbox.key_id(dup_key)}
    victim_objects = {oid for oid, contacts in s.owners.items() if contacts & victim}
    after = s.sandbox.dump()
    for oid in victim_objects:
        assert after["works"].get(oid, after["conversations"].get(oid)) == \
            before["works"].get(oid, before["conversations"].get(oid))
    assert not [n for n in os.listdir(tmp_path / "backups") if n.endswith(backup.PARTIAL_SUFFIX)]

    # DevRev fixes its metadata: the re-run ends like a clean run of the fixed data
    art = s.sandbox.state.artifacts[s.sandbox.key_id("artifact-9901")]
    art["file"]["size"] = len(content)
    s.expected = _with_size(s.expected, art["id"], len(content))
    s.ends_clean()


def _with_size(value, artifact_id: str, size: int):
    """`value` with every rendering of the artifact (its own and each summary) at `size` bytes."""
    if isinstance(value, list):
        return [_with_size(v, artifact_id, size) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _with_size(v, artifact_id, size) for k, v in value.items()}
    if out.get("id") == artifact_id and isinstance(out.get("file"), dict):
        out["file"] = dict(out["file"], size=size)
    return out
