"""Approved plans (--plan-out, approve_plan.py, --plan --require-approval), on the emulator.

A plan approved by one allowed signer runs and its report names the plan, the approver and the
key's fingerprint; the same plan edited after signing, signed by its own author only, signed by an
unknown key, or not signed, is refused with one line and no call to DevRev. The keys are made
with ssh-keygen in tmp_path.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator

import approve_plan
import devrev_client
from devrev_sandbox.dataset import build_dataset
from helpers import ROOT, MergeRun, normalized
from merging.preview_scope import Scope, plan_difference
from plumbing.cli import ExitCode, UsageError
from runs import approval
from runs.plan_file import load_plan
from test_restore import RestoreRun

AUTHOR = "admin@sandbox.invalid"   # the emulator's dev-users.self: who every preview here is made by


@pytest.fixture
def small_dataset():
    return build_dataset(3, seed=5, tickets=(1, 2), conversations=(1, 1), two_duplicate_sets=1, skipped=False)


class Keys:
    """Three ed25519 keys (bob the approver, the author's own, eve's unknown one) and the allowed signers."""

    def __init__(self, folder):
        self.dir = folder
        for name in ("bob", "author", "eve"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)],
                           check=True)
        self.signers = str(folder / "allowed_signers")
        with open(self.signers, "w", encoding="utf-8") as fh:
            fh.write(f"bob@example.com {self.public('bob')}\n{AUTHOR} {self.public('author')}\n")
        os.chmod(self.signers, 0o600)

    def key(self, name: str) -> str:
        return str(self.dir / name)

    def public(self, name: str) -> str:
        return open(self.key(name) + ".pub", encoding="utf-8").read().strip()

    def fingerprint(self, name: str) -> str:
        out = subprocess.run(["ssh-keygen", "-l", "-f", self.key(name) + ".pub"], check=True, capture_output=True,
                             text=True).stdout
        return out.split()[1]

    def sign_raw(self, name: str, plan: str) -> None:
        """ssh-keygen's own signature, as anyone holding the key could make it (no approve_plan checks)."""
        with open(plan, "rb") as src, open(plan + ".sig", "wb") as out:
            subprocess.run(["ssh-keygen", "-Y", "sign", "-f", self.key(name), "-n", approval.NAMESPACE], stdin=src,
                           stdout=out, stderr=subprocess.DEVNULL, check=True)


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    return Keys(folder)


def _approve(plan: str, keys: Keys, who: str = "bob", identity: str = "bob@example.com") -> int:
    return approve_plan.main([plan, "--key", keys.key(who), "--identity", identity, "--allowed-signers",
                              keys.signers, "--yes"])


def _no_client(monkeypatch) -> list:
    """Every DevRevClient made from now on (none may be, for a refused run)."""
    made: list = []
    real = devrev_client.DevRevClient.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(devrev_client.DevRevClient, "__init__", counting)
    return made


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_approved_merge_plan_runs_and_its_report_names_plan_approver_and_key(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    preview = run.latest_report("preview")
    assert open(plan, "rb").read() == open(sorted((tmp_path / "reports").glob("preview_*.json"))[-1], "rb").read()
    capsys.readouterr()
    assert _approve(plan, keys) == 0
    shown = capsys.readouterr().out
    assert f"author    {AUTHOR}" in shown and preview["csv"]["sha256"] in shown and "sets      3 merge sets" in shown
    assert f"approved by bob@example.com, key {keys.fingerprint('bob')}" in shown

    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers) == 0
    report = run.latest_report()
    assert report["totals"]["merged"] == 3
    assert all(normalized(sandbox.dump())["rev_users"][sandbox.key_id(d)]["retired"]
               for s in small_dataset.merge_sets for d in s["duplicates"])
    assert report["preview"] == plan
    assert report["plan"] == {"path": plan, "sha256": report["plan"]["sha256"], "author": AUTHOR,
                              "approved_by": "bob@example.com", "key_fingerprint": keys.fingerprint("bob"),
                              "signature": plan + ".sig"}
    assert f"approved by bob@example.com, key {keys.fingerprint('bob')}" in report["approved_plan"]
    html = open(str(tmp_path / "reports" / f"merge_report_{report['run_id']}.html"), encoding="utf-8").read()
    assert keys.fingerprint("bob") in html


def _edited(plan: str, keys: Keys) -> None:
    assert _approve(plan, keys) == 0
    data = json.load(open(plan, encoding="utf-8"))
    data["sets"] = data["sets"][:1]
    data.pop("totals")   # (totals that disagree with the sets are refused before the signature is read)
    with open(plan, "w", encoding="utf-8") as fh:
        json.dump(data, fh)


REFUSALS = {
    "edited after signing": (_edited, "changed since it was signed"),
    "signed by its author only": (lambda plan, keys: keys.sign_raw("author", plan), "its own author's key"),
    "signed by an unknown key": (lambda plan, keys: keys.sign_raw("eve", plan), "no allowed signer"),
    "not signed": (lambda plan, keys: None, "is not approved: no signature"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_merge_plan_not_approved_by_someone_else_is_refused_with_one_line_and_no_call(
        case, tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    spoil, said = REFUSALS[case]
    spoil(plan, keys)
    before = sandbox.dump()
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers) == ExitCode.USAGE
    assert said in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == [] and sandbox.dump() == before
    assert not (tmp_path / "backups").exists() or os.listdir(tmp_path / "backups") == []


def test_the_permanent_setting_requires_a_plan_and_refuses_the_author_approving_it(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    monkeypatch.setenv(approval.REQUIRE_ENV, "1")
    monkeypatch.setenv(approval.SIGNERS_ENV, keys.signers)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0    # a preview needs no approval
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run() == ExitCode.USAGE             # the newest preview no longer unlocks a run
    assert "needs an approved plan" in _one_error_line(capsys)
    assert run.run("--skip-preview-check") == ExitCode.USAGE
    assert "--skip-preview-check cannot go with --require-approval" in _one_error_line(capsys)
    assert _approve(plan, keys, "author", AUTHOR) == ExitCode.USAGE   # approve_plan refuses the author at once
    assert "a second person must approve it" in _one_error_line(capsys)
    assert not os.path.exists(plan + ".sig")
    assert made == [] and sandbox.request_log == []
    assert _approve(plan, keys) == 0
    capsys.readouterr()
    assert run.run("--plan", plan, "--json") == 0
    assert json.loads(capsys.readouterr().out)["details"]["plan"]["approved_by"] == "bob@example.com"
    assert run.latest_report()["plan"]["approved_by"] == "bob@example.com"


def test_a_plan_binds_the_csv_the_options_and_its_age(tmp_path, monkeypatch, make_sandbox, small_dataset, keys,
                                                      capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    assert _approve(plan, keys) == 0
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    approved = ["--plan", plan, "--require-approval", "--allowed-signers", keys.signers]
    other = tmp_path / "other.csv"
    other.write_bytes(open(run.csv, "rb").read() + b"\n")
    capsys.readouterr()
    assert merge_with_csv(run, str(other), *approved) == ExitCode.USAGE
    assert "the plan was made from other CSV bytes" in _one_error_line(capsys)
    assert run.run(*approved, "--keep-duplicate") == ExitCode.USAGE   # narrower, but not the plan signed
    assert "made without --keep-duplicate, this run goes with --keep-duplicate" in _one_error_line(capsys)
    assert run.run(*approved, "--only", small_dataset.merge_sets[0]["email"]) == ExitCode.USAGE
    assert "without --only" in _one_error_line(capsys)
    monkeypatch.setattr("runs.preview_gate.utc_now", lambda: _later(plan, hours=25))
    assert run.run(*approved) == ExitCode.USAGE
    too_old = _one_error_line(capsys)
    assert "older than the 24 hours" in too_old and "approve again" in too_old
    assert "raise --preview-max-age" not in too_old
    assert made == [] and sandbox.request_log == []
    # options that cannot go together are refused as such
    assert run.run("--plan-out", plan) == ExitCode.USAGE
    assert "--plan-out only goes with --preview" in _one_error_line(capsys)
    assert run.preview("--plan", plan) == ExitCode.USAGE
    assert "--plan goes with a real run" in _one_error_line(capsys)


def test_a_plan_unlocks_runs_for_the_age_it_was_made_for_not_the_runs(tmp_path, monkeypatch, make_sandbox,
                                                                      small_dataset, keys, capsys):
    """A job of several nights: the preview's --preview-max-age is in the approved bytes (shown to
    the approver as "valid to"); a run's own --preview-max-age neither extends nor shortens it."""
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    short, week = str(tmp_path / "SHORT.json"), str(tmp_path / "WEEK.json")
    assert run.preview("--plan-out", short) == 0
    assert run.preview("--plan-out", week, "--preview-max-age", "168") == 0
    assert _approve(short, keys) == 0 and _approve(week, keys) == 0
    assert "(168 hours: the preview's --preview-max-age)" in capsys.readouterr().out
    approved = ["--require-approval", "--allowed-signers", keys.signers]
    monkeypatch.setattr("runs.preview_gate.utc_now", lambda: _later(week, hours=100))
    assert run.run("--plan", short, *approved, "--preview-max-age", "1000") == ExitCode.USAGE
    assert "older than the 24 hours" in _one_error_line(capsys)
    assert run.run("--plan", week, *approved, "--max-merges", "1") == ExitCode.USAGE   # the plan's options only
    capsys.readouterr()
    assert run.run("--plan", week, *approved) == 0   # four days on, within the week it was approved for
    assert run.latest_report()["totals"]["merged"] == 3


def merge_with_csv(run: MergeRun, csv: str, *args: str) -> int:
    import merge_contacts
    paths = run.paths()
    paths[paths.index("--csv") + 1] = csv
    return merge_contacts.main(paths + list(args))


def _later(plan: str, *, hours: float):
    from datetime import timedelta

    from plumbing.clock import instant
    return instant(json.load(open(plan, encoding="utf-8"))["created_at"]) + timedelta(hours=hours)


def test_a_named_plan_is_followed_even_when_a_newer_preview_differs(tmp_path, monkeypatch, make_sandbox,
                                                                   small_dataset, keys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    assert run.preview("--only", small_dataset.merge_sets[0]["email"]) == 0   # newer, narrower
    assert run.run() == ExitCode.USAGE                                         # the newest-preview rule
    assert run.run("--plan", plan) == 0                                        # the plan, not approved
    report = run.latest_report()
    assert report["totals"]["merged"] == 3 and report["plan"]["approved_by"] is None


def test_show_says_whether_a_plan_is_approved(tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    capsys.readouterr()
    assert approve_plan.main(["--show", plan, "--allowed-signers", keys.signers]) == ExitCode.FAILED
    assert "approval  not approved: no signature" in capsys.readouterr().out
    assert _approve(plan, keys) == 0
    capsys.readouterr()
    assert approve_plan.main(["--show", plan, "--allowed-signers", keys.signers, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with open(os.path.join(ROOT, "docs", "summary.schema.json"), encoding="utf-8") as fh:
        assert list(Draft202012Validator(json.load(fh)).iter_errors(summary)) == []
    assert summary["script"] == "approve_plan.py" and summary["kind"] == "plan" and summary["exit_code"] == 0
    assert summary["details"]["approval"]["key_fingerprint"] == keys.fingerprint("bob")
    assert summary["details"]["plan"]["author"] == AUTHOR
    assert run.preview("--plan-out", plan) == 0    # a new plan under the name: the old signature goes
    assert not os.path.exists(plan + ".sig")


def test_an_approved_restore_plan_runs_and_an_author_signed_one_is_refused(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    restore = RestoreRun(run)
    plan = str(tmp_path / "RESTORE.json")
    assert restore.run("--preview", "--plan-out", plan) == 0
    approved = ["--plan", plan, "--require-approval", "--allowed-signers", keys.signers]

    keys.sign_raw("author", plan)
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert restore.run(*approved) == ExitCode.USAGE
    assert "its own author's key" in _one_error_line(capsys)
    assert restore.run(*approved[:2], *approved[3:]) == ExitCode.USAGE   # a signature there must hold, required or not
    assert "its own author's key" in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []
    merge_plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", merge_plan) == 0
    capsys.readouterr()
    assert restore.run("--plan", merge_plan) == ExitCode.USAGE
    assert "a plan for merge_contacts.py, not for restore_contacts.py" in _one_error_line(capsys)

    assert _approve(plan, keys) == 0
    made.clear()
    sandbox.clear_log()
    capsys.readouterr()
    assert restore.run(*approved, "--no-restore-note") == ExitCode.USAGE   # the approved plan, other options
    assert "without --no-restore-note, this run goes with --no-restore-note" in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []
    assert restore.run(*approved) == 0
    report = restore.report()
    assert report["totals"]["restored"] == 3
    assert report["plan"]["approved_by"] == "bob@example.com"
    assert report["plan"]["key_fingerprint"] == keys.fingerprint("bob") and report["preview"] == plan
    assert all(not normalized(sandbox.dump())["rev_users"][d["new_id"]]["retired"]
               for s in report["sets"] for d in s["duplicates"])


# --------------------------------------------------------------------------- the rules alone
@pytest.mark.parametrize("value, required", [("1", True), ("yes", True), ("ON", True), ("0", False), ("", False),
                                             ("off", False)])
def test_the_permanent_setting_reads_the_usual_words(value, required, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)   # no .env here
    monkeypatch.setenv(approval.REQUIRE_ENV, value)
    monkeypatch.setenv(approval.SIGNERS_ENV, "/etc/devrev/allowed_signers")
    assert approval.Policy.of(False, None) == approval.Policy(required, "/etc/devrev/allowed_signers")
    assert approval.Policy.of(True, "/etc/devrev/allowed_signers").required
    monkeypatch.delenv(approval.SIGNERS_ENV)
    assert approval.Policy.of(True, "mine").required and approval.Policy.of(True, "mine").allowed_signers == "mine"


def test_a_permanent_setting_that_is_not_a_yes_or_no_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(approval.REQUIRE_ENV, "maybe")
    with pytest.raises(UsageError, match="DEVREV_REQUIRE_APPROVAL='maybe'"):
        approval.Policy.of(False, None)


def test_an_allowed_signers_file_others_can_change_is_refused(tmp_path, keys):
    plan = tmp_path / "PLAN.json"
    plan.write_text(json.dumps({"kind": "preview", "actor": {"devrev_user": {"email": AUTHOR}}}))
    keys.sign_raw("bob", str(plan))
    loaded = load_plan(str(plan), "preview")
    assert approval.verify(loaded, keys.signers).approved_by == "bob@example.com"
    os.chmod(keys.signers, 0o664)
    with pytest.raises(UsageError, match="can be changed by others"):
        approval.verify(loaded, keys.signers)


def test_a_pattern_principal_that_matches_the_author_is_the_authors_key(tmp_path, keys):
    with open(keys.signers, "w", encoding="utf-8") as fh:
        fh.write(f"*@sandbox.invalid {keys.public('bob')}\n")
    plan = tmp_path / "PLAN.json"
    plan.write_text(json.dumps({"kind": "preview", "actor": {"devrev_user": {"email": AUTHOR.upper()}}}))
    keys.sign_raw("bob", str(plan))
    with pytest.raises(UsageError, match="its own author's key"):
        approval.verify(load_plan(str(plan)), keys.signers)


@pytest.mark.parametrize("change, said", [
    ({"keep_duplicate": True}, "made without --keep-duplicate, this run goes with --keep-duplicate"),
    ({"merge_note": False}, "made without --no-merge-note, this run goes with --no-merge-note"),
    ({"only": "a@x.example"}, "made without --only, this run goes with --only a@x.example"),
    ({"max_merges": 2}, "made without --max-merges, this run goes with --max-merges 2"),
    ({"fill_blanks": ("tags",)}, "made without --fill-blanks, this run goes with --fill-blanks tags"),
    ({"target": "https://api.devrev.ai"}, "made against sandbox, this run goes to https://api.devrev.ai"),
    ({"csv_sha256": "b" * 64}, "made from other CSV bytes"),
    ({}, None),
])
def test_a_run_must_be_exactly_its_plan(change, said):
    planned = Scope(csv_sha256="a" * 64, target="sandbox")
    plan = {"kind": "preview", "scope": dict(planned.to_json(), fill_blanks=[])}
    difference = plan_difference(plan, replace(planned, **change))
    assert difference == said if said is None else said in difference


# --------------------------------------------------------------------------- the attacker trial's findings
def _tiny_plan(tmp_path, author: str = AUTHOR, **more) -> str:
    plan = tmp_path / "PLAN.json"
    plan.write_text(json.dumps({"kind": "preview", "actor": {"devrev_user": {"email": author}}, **more}))
    return str(plan)


@pytest.mark.parametrize("second_line", [
    f"{AUTHOR} {{author}}",                                  # the author's key on a second line
    "*@sandbox.invalid {author}",
    "admin@sandbox.invali? {author}",
    f'{AUTHOR} namespaces="git" {{author}}',                  # a line for another namespace
    f'{AUTHOR} valid-before="20000101" {{author}}',           # an expired line
    f'"nobody@example.com,{AUTHOR}" {{author}}',               # quoted principals
    f"!{AUTHOR} {{author}}",                                 # a negation counts as naming it
])
def test_f3_every_line_of_the_signers_file_that_gives_the_key_to_the_author_counts(second_line, tmp_path, keys):
    """ssh-keygen -Y find-principals prints the first matching line only: the file is read whole."""
    with open(keys.signers, "w", encoding="utf-8") as fh:
        fh.write(f"ops@example.com {keys.public('author')}\n"
                 + second_line.format(author=keys.public("author")) + "\n")
    plan = _tiny_plan(tmp_path)
    keys.sign_raw("author", plan)
    with pytest.raises(UsageError, match="its own author's key"):
        approval.verify(load_plan(plan), keys.signers)


def test_f3_the_key_and_its_fingerprint_come_from_the_signature_itself(tmp_path, keys):
    plan = _tiny_plan(tmp_path)
    keys.sign_raw("bob", plan)
    blob = approval.signature_key(open(plan + ".sig", "rb").read())
    assert approval.fingerprint(blob) == keys.fingerprint("bob")
    found = approval.verify(load_plan(plan), keys.signers)
    assert found.approved_by == "bob@example.com" and found.key_fingerprint == keys.fingerprint("bob")
    assert found.principals == ("bob@example.com",)


def test_f3_a_run_refuses_a_plan_signed_with_a_key_a_second_line_gives_its_author(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    with open(keys.signers, "w", encoding="utf-8") as fh:
        fh.write(f"ops@example.com {keys.public('author')}\n{AUTHOR} {keys.public('author')}\n")
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    keys.sign_raw("author", plan)
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers) == ExitCode.USAGE
    assert "its own author's key" in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []


def test_f1_an_author_who_forges_the_author_field_is_refused_as_the_runner(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    """The author edits actor.devrev_user.email before signing with their own key: the run asks
    DevRev who its token is and refuses before any write."""
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    data = json.load(open(plan, encoding="utf-8"))
    data["actor"]["devrev_user"]["email"] = "carol@example.com"
    with open(plan, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    assert approve_plan.main([plan, "--key", keys.key("author"), "--identity", AUTHOR, "--yes"]) == 0
    before = sandbox.dump()
    capsys.readouterr()
    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers) == ExitCode.USAGE
    line = _one_error_line(capsys)
    assert f"the allowed signers give to {AUTHOR}, who runs it" in line
    assert sandbox.dump() == before and run.backups() == []
    assert not glob_reports(tmp_path, "merge_report")


def glob_reports(tmp_path, kind: str) -> list:
    return sorted((tmp_path / "reports").glob(f"{kind}_*.json"))


def test_f1_a_runner_who_cannot_be_told_is_refused_when_approval_is_required(tmp_path, keys):
    plan = _tiny_plan(tmp_path)
    keys.sign_raw("bob", plan)
    named = approval.CheckedPlan(load_plan(plan), approval.verify(load_plan(plan), keys.signers), required=True)
    with pytest.raises(UsageError, match="cannot tell who it runs as"):
        approval.check_runner(named, {"devrev_user": None})
    with pytest.raises(UsageError, match="who runs it"):
        approval.check_runner(named, {"devrev_user": {"email": "BOB@example.com"}})
    approval.check_runner(named, {"devrev_user": {"email": AUTHOR}})
    approval.check_runner(replace(named, required=False), {"devrev_user": None})


def test_f4_a_plan_whose_totals_and_csv_are_not_its_sets_is_refused_to_approver_and_run(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    narrow, plan = str(tmp_path / "NARROW.json"), str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", narrow, "--only", small_dataset.merge_sets[0]["email"]) == 0
    assert run.preview("--plan-out", plan) == 0
    small, data = json.load(open(narrow, encoding="utf-8")), json.load(open(plan, encoding="utf-8"))
    data["totals"] = small["totals"]
    data["csv"].update(path="/data/approved_small_sample.csv")
    with open(plan, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    capsys.readouterr()
    assert _approve(plan, keys) == ExitCode.USAGE
    assert "the plan's summary disagrees with its sets" in _one_error_line(capsys)
    assert not os.path.exists(plan + ".sig")
    keys.sign_raw("bob", plan)   # signed without approve_plan's look: the run refuses it as well
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers) == ExitCode.USAGE
    assert "not a preview this tool wrote" in _one_error_line(capsys)
    for edit, said in (({"target": "https://api.devrev.ai"}, "target https://api.devrev.ai, its scope"),
                       ({"csv": dict(data["csv"], sha256="c" * 64)}, "csv.sha256")):
        fresh = json.load(open(narrow, encoding="utf-8"))
        fresh.update(edit)
        with open(plan, "w", encoding="utf-8") as fh:
            json.dump(fresh, fh)
        keys.sign_raw("bob", plan)
        assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers) == ExitCode.USAGE
        assert said in _one_error_line(capsys)
    # csv.rows is checked against the CSV the run read
    fresh = json.load(open(narrow, encoding="utf-8"))
    fresh["csv"]["rows"] = 3
    with open(plan, "w", encoding="utf-8") as fh:
        json.dump(fresh, fh)
    keys.sign_raw("bob", plan)
    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers,
                   "--only", small_dataset.merge_sets[0]["email"]) == ExitCode.USAGE
    assert "the plan says its CSV has 3 rows" in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []


def test_f4_the_summary_counts_the_sets_shows_the_checked_scope_and_escapes_controls(tmp_path):
    sets = [{"email": "a@x.example", "status": "would_merge", "estimated_calls": 7,
             "duplicates": [{"ticket_ids": ["t1", "t2"], "conversation_ids": ["c1"], "messages": 2, "attachments": 1}]},
            {"email": "b@x.example", "status": "skipped"}]
    plan = _tiny_plan(tmp_path, sets=sets, target="sandbox",
                      scope={"csv_sha256": "a" * 64, "target": "sandbox", "only": "\x1b[31mred"},
                      csv={"path": "/tmp/\x1b[2Jx.csv", "rows": 9, "sha256": "a" * 64})
    shown = "\n".join(approve_plan.summary_lines(load_plan(plan)))
    assert "\x1b" not in shown and "\\x1b[2Jx.csv (informational" in shown and "\\x1b[31mred" in shown
    assert "sets      2 merge sets: the run may start 1 (every set not shown skipped or already done); 1 skipped" \
        in shown
    assert "items     2 tickets, 1 conversations, 2 messages, 1 attachments, as the preview read them; a run moves " \
           "what the duplicates own when it runs" in shown
    assert "about 7 API calls" in shown and f"CSV sha256 {'a' * 64} (9 rows" in shown


def test_f4_a_restore_plan_whose_totals_are_not_its_sets_is_refused(tmp_path):
    plan = tmp_path / "RESTORE.json"
    plan.write_text(json.dumps({"kind": "restore_preview", "target": "sandbox",
                                "sets": [{"status": "would_restore", "writes": [{}, {}]}],
                                "totals": {"sets": 1, "would_restore": 1, "writes": 0}}))
    with pytest.raises(UsageError, match=r"disagrees with its sets \(totals.writes 0, its sets 2\)"):
        load_plan(str(plan))


def test_f2_the_permanent_allowed_signers_cannot_be_replaced_on_the_command_line(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys, caplog):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    monkeypatch.setenv(approval.REQUIRE_ENV, "1")
    monkeypatch.setenv(approval.SIGNERS_ENV, keys.signers)
    mine = tmp_path / "mine"
    mine.write_text(f"approver@example.com {keys.public('eve')}\n")
    os.chmod(mine, 0o644)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    keys.sign_raw("eve", plan)
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run("--plan", plan, "--allowed-signers", str(mine)) == ExitCode.USAGE
    assert "is not the allowed signers DEVREV_ALLOWED_SIGNERS names" in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []
    # a signers file the runner itself can change is warned about
    caplog.clear()
    plan_only = _tiny_plan(tmp_path / "reports")
    keys.sign_raw("bob", plan_only)
    approval.verify(load_plan(plan_only), keys.signers, runner=True)
    assert "can be changed by the user running this" in caplog.text


def test_f6_an_off_in_the_environment_does_not_beat_an_on_in_dotenv(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)   # (its working folder is tmp_path)
    (tmp_path / ".env").write_text(f"{approval.REQUIRE_ENV}=1\n")
    monkeypatch.setenv(approval.REQUIRE_ENV, "0")
    assert approval.Policy.of(False, None).required
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run("--skip-preview-check") == ExitCode.USAGE
    assert "--skip-preview-check cannot go with --require-approval" in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []


def test_f7_a_fake_ssh_keygen_on_path_does_not_approve(tmp_path, monkeypatch, keys):
    if not any(approval._system_tool(p) for p in approval.SYSTEM_SSH_KEYGEN):
        pytest.skip("no system ssh-keygen owned by root here")
    plan = _tiny_plan(tmp_path)
    keys.sign_raw("bob", plan)
    with open(plan, "a", encoding="utf-8") as fh:
        fh.write(" ")   # changed after signing
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh-keygen").write_text(f"#!/bin/sh\ncat >/dev/null\necho 'bob@example.com'\necho 'Good "
                                     f"\"{approval.NAMESPACE}\" signature for bob@example.com with ED25519 key "
                                     f"{keys.fingerprint('bob')}'\n")
    os.chmod(fake / "ssh-keygen", 0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(UsageError, match="changed since it was signed"):
        approval.verify(load_plan(plan), keys.signers, runner=True)


def test_approving_leaves_no_signature_that_approves_nothing(tmp_path, monkeypatch, make_sandbox, small_dataset,
                                                             keys, capsys):
    """A signature the allowed signers do not accept (unknown key, another person's --identity, an
    unreadable file) is not left beside the plan; an earlier one is put back as it was."""
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    assert _approve(plan, keys, who="eve", identity="eve@example.com") == ExitCode.FAILED
    assert not os.path.exists(plan + ".sig")
    assert _approve(plan, keys, identity="robert@example.com") == ExitCode.FAILED   # bob's key, not robert's
    assert "not to --identity robert@example.com" in capsys.readouterr().out
    assert not os.path.exists(plan + ".sig")
    assert approve_plan.main([plan, "--key", keys.key("bob"), "--identity", "bob@example.com", "--allowed-signers",
                              str(tmp_path / "nope"), "--yes"]) == ExitCode.FAILED
    assert not os.path.exists(plan + ".sig")
    assert _approve(plan, keys) == 0
    approved = open(plan + ".sig", "rb").read()
    assert _approve(plan, keys, who="eve", identity="eve@example.com") == ExitCode.FAILED
    assert open(plan + ".sig", "rb").read() == approved


# --------------------------------------------------------------------------- the second attacker trial's findings
def _rewrite(plan: str, edit) -> dict:
    data = json.load(open(plan, encoding="utf-8"))
    edit(data)
    with open(plan, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return data


def _refused_run(run: MergeRun, plan: str, keys: Keys, sandbox, monkeypatch, capsys, *args: str) -> str:
    """The run's one error line; it exits 2 having made no DevRev client and no request."""
    keys.sign_raw("bob", plan)
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run("--plan", plan, "--require-approval", "--allowed-signers", keys.signers, *args) == ExitCode.USAGE
    line = _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []
    return line


def test_n1_the_summary_says_how_many_sets_the_run_may_start_and_odd_sets_are_refused(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    """The author relabels every would_merge set merge_refused (totals.would_merge 0): the run
    would still start them all, and the summary says so; a status no preview writes, or a set
    that is not an object (a null gave a traceback), is refused to approver and run alike."""
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0

    def relabel(data):
        for s in data["sets"]:
            s["status"] = "merge_refused"
        data["totals"]["would_merge"] = 0
    _rewrite(plan, relabel)
    capsys.readouterr()
    assert approve_plan.main(["--show", plan]) == ExitCode.FAILED
    assert "sets      3 merge sets: the run may start 3 (" in capsys.readouterr().out
    original = json.load(open(plan, encoding="utf-8"))
    for bad, said in (("held_back", "set 1 has the status 'held_back', which no preview writes"),
                      (None, "set 1 is not an object (null)")):
        def spoil(data, bad=bad):
            data["sets"][0] = dict(data["sets"][0], status=bad) if bad else None
        _rewrite(plan, spoil)
        capsys.readouterr()
        assert _approve(plan, keys) == ExitCode.USAGE
        assert said in _one_error_line(capsys) and not os.path.exists(plan + ".sig")
        assert said in _refused_run(run, plan, keys, sandbox, monkeypatch, capsys)
        os.unlink(plan + ".sig")
        _rewrite(plan, lambda data: data.update(original))


def test_n1_held_back_is_the_runs_rule():
    from runs.plan_file import held_back, may_start
    assert not held_back({"status": "merge_refused"}, ask_refused_again=False)
    assert held_back({"status": "merge_refused"}, ask_refused_again=True)
    assert held_back({"status": "skipped"}, ask_refused_again=False)
    assert held_back({"status": "already_merged"}, ask_refused_again=False)
    assert not held_back({"status": "restored"}, ask_refused_again=False)
    plan = {"kind": "preview", "scope": {"ask_refused_again": True},
            "sets": [{"status": s} for s in ("would_merge", "merge_refused", "skipped", "already_moved_only",
                                              "restored")]}
    assert may_start(plan) == 2


def test_n2_a_restore_plan_is_counted_from_its_writes_and_refused_when_its_totals_are_not_them(tmp_path):
    plan = tmp_path / "RESTORE.json"
    sets = [{"status": "would_restore", "duplicates": [{"recreate": True, "items": [{"action": "move_back"}]}],
             "writes": [{"write": "item_back", "id": "t1"}, {"write": "item_back", "id": "t2"},
                        {"write": "recreate", "id": "d1"}]}]
    plan.write_text(json.dumps({"kind": "restore_preview", "target": "sandbox", "sets": sets,
                                "totals": {"contacts_to_recreate": 1, "items_to_give_back": 1, "writes": 3}}))
    with pytest.raises(UsageError, match=r"totals.items_to_give_back 1, its sets 2"):
        load_plan(str(plan))
    plan.write_text(json.dumps({"kind": "restore_preview", "target": "sandbox", "sets": sets}))
    shown = "\n".join(approve_plan.summary_lines(load_plan(str(plan))))
    assert "items     1 contacts to recreate, 2 items to give back (from the writes listed" in shown


@pytest.mark.parametrize("age", ["remove", 0, 1e9, "NaN", "168"])
def test_n3_a_plan_without_a_valid_age_is_valid_for_the_fixed_default_not_the_runs(
        age, tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0

    def spoil(data):
        if age == "remove":
            data["options"].pop("preview_max_age", None)
        else:
            data["options"]["preview_max_age"] = float("nan") if age == "NaN" else age
    _rewrite(plan, spoil)
    capsys.readouterr()
    assert approve_plan.main(["--show", plan]) == ExitCode.FAILED
    assert "(24 hours: the fixed default: the plan records no valid --preview-max-age)" in capsys.readouterr().out
    monkeypatch.setattr("runs.preview_gate.utc_now", lambda: _later(plan, hours=100))
    line = _refused_run(run, plan, keys, sandbox, monkeypatch, capsys, "--preview-max-age", "1000")
    assert "older than the 24 hours" in line


def test_n3_a_validity_over_three_days_is_flagged_on_its_own_line(tmp_path):
    plan = _tiny_plan(tmp_path, created_at="2026-01-01T00:00:00Z", options={"preview_max_age": 168})
    shown = approve_plan.summary_lines(load_plan(plan))
    assert "LONG      valid for 7 days: longer than 3 days — make sure you mean it" in shown
    plan = _tiny_plan(tmp_path, created_at="2026-01-01T00:00:00Z", options={"preview_max_age": 72})
    assert not any(line.startswith("LONG") for line in approve_plan.summary_lines(load_plan(plan)))


def test_n4_allowed_signers_named_differently_by_environment_and_dotenv_is_refused(
        tmp_path, monkeypatch, make_sandbox, small_dataset, keys, capsys, caplog):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)   # (its working folder is tmp_path)
    plan = str(tmp_path / "PLAN.json")
    assert run.preview("--plan-out", plan) == 0
    mine = tmp_path / "mine"
    mine.write_text(f"approver@example.com {keys.public('eve')}\n")
    os.chmod(mine, 0o600)
    (tmp_path / ".env").write_text(f"{approval.SIGNERS_ENV}={keys.signers}\n{approval.REQUIRE_ENV}=1\n")
    monkeypatch.setenv(approval.SIGNERS_ENV, str(mine))
    monkeypatch.setenv(approval.REQUIRE_ENV, "1")   # (so that what the run's .env loading sets is undone)
    keys.sign_raw("eve", plan)
    sandbox.clear_log()
    made = _no_client(monkeypatch)
    capsys.readouterr()
    assert run.run("--plan", plan) == ExitCode.USAGE
    assert f"{approval.SIGNERS_ENV} names {mine} in the environment and {keys.signers} in .env" \
        in _one_error_line(capsys)
    assert made == [] and sandbox.request_log == []
    monkeypatch.setenv(approval.SIGNERS_ENV, keys.signers)   # the same file: fine
    assert approval.Policy.of(False, None).allowed_signers == keys.signers
    caplog.clear()
    keys.sign_raw("bob", plan)
    approval.verify(load_plan(plan), keys.signers, runner=True)
    assert "that holds the allowed signers can be written by the user running this" in caplog.text


@pytest.mark.parametrize("line, counted", [
    (f'{AUTHOR} namespaces="git\\" x" {{author}}', True),     # OpenSSH: an escaped quote inside the options
    (f'{AUTHOR} namespaces="git\\" x {{author}}', None),      # the key's line, not readable: refused
    (f"{AUTHOR} not-a-key-type {{author}}", True),           # holds the key's base64: its principals count
])
def test_n5_the_signers_parser_reads_escaped_quotes_and_any_line_holding_the_key(line, counted, tmp_path, keys):
    with open(keys.signers, "w", encoding="utf-8") as fh:
        fh.write(f"ops@example.com {keys.public('author')}\n" + line.format(author=keys.public("author")) + "\n")
    plan = _tiny_plan(tmp_path)
    keys.sign_raw("author", plan)
    blob = approval.signature_key(open(plan + ".sig", "rb").read())
    if counted is None:
        with pytest.raises(UsageError, match="line 2: it holds the plan's signing key but cannot be read"):
            approval.principals_of(keys.signers, blob)
        with pytest.raises(UsageError, match="line 2"):
            approval.verify(load_plan(plan), keys.signers)
        return
    assert AUTHOR in approval.principals_of(keys.signers, blob)
    with pytest.raises(UsageError, match="its own author's key"):
        approval.verify(load_plan(plan), keys.signers)


def test_n5_the_signers_parser_follows_openssh_on_quotes():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="
    assert approval._parsed(f'a@x namespaces="git\\" x" {key}')[0] == ["a@x"]
    assert approval._parsed(f'"a@x,b@y" {key}')[0] == ["a@x", "b@y"]
    assert approval._parsed(f'a@x valid-before="2030",namespaces="p" {key}')[0] == ["a@x"]
    assert approval._parsed(f'a@x namespaces="git {key}') is None


def test_n7_show_checks_with_the_system_ssh_keygen(tmp_path, monkeypatch, keys, capsys):
    if not any(approval._system_tool(p) for p in approval.SYSTEM_SSH_KEYGEN):
        pytest.skip("no system ssh-keygen owned by root here")
    plan = _tiny_plan(tmp_path, sets=[], complete=True)
    keys.sign_raw("bob", plan)
    with open(plan, "a", encoding="utf-8") as fh:
        fh.write(" ")   # changed after signing
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh-keygen").write_text(f"#!/bin/sh\ncat >/dev/null\necho 'Good \"{approval.NAMESPACE}\" signature "
                                     f"for bob@example.com with ED25519 key {keys.fingerprint('bob')}'\n")
    os.chmod(fake / "ssh-keygen", 0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    capsys.readouterr()
    assert approve_plan.main(["--show", plan, "--allowed-signers", keys.signers]) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert "NOT APPROVED" in out and "changed since it was signed" in out


def test_the_summary_escapes_zero_width_characters(tmp_path):
    plan = _tiny_plan(tmp_path, scope={"csv_sha256": "a" * 64, "target": "sand\u200bbox"},
                      csv={"path": "/data/ok\u2066.csv"})
    shown = "\n".join(approve_plan.summary_lines(load_plan(plan)))
    assert "\u200b" not in shown and "\u2066" not in shown and "sand\\u200bbox" in shown
