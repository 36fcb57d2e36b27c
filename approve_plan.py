"""Approve a plan as the second person: read its summary, then sign its exact bytes with your key.

    python approve_plan.py PLAN.json --key ~/.ssh/id_ed25519 --identity bob@example.com
    python approve_plan.py --show PLAN.json [--allowed-signers FILE]

A plan is a preview written by `merge_contacts.py --preview --plan-out PLAN.json` (or
`restore_contacts.py --preview --plan-out`). This shows what it would do (sets, items, calls,
its author, the CSV's hash, the target), asks you to confirm (or --yes), and writes the
signature beside it, PLAN.json.sig (`ssh-keygen -Y sign`, namespace devrev-merge-plan). A run
with --plan PLAN.json --require-approval then takes it only if the allowed-signers file gives
the signing key to someone other than the plan's author, and only while its bytes are unchanged.

Exit codes (cli.ExitCode): 0 signed (--show: the plan is approved); 1 not signed (you said no;
--show: not approved, or its signature could not be checked); 2 bad usage, an unreadable plan,
a key ssh-keygen cannot sign with, or you are the plan's author.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

from plumbing import cli, json_summary
from plumbing.cli import ExitCode, UsageError
from plumbing.files import atomic_write_bytes
from runs import approval
from runs.plan_file import Plan, load_plan, signature_path, summary_lines


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="approve_plan.py", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", metavar="PLAN.json", help="the plan (a preview written with --plan-out)")
    p.add_argument("--show", action="store_true",
                   help="only show the plan's summary and whether its signature is an approval; sign nothing")
    p.add_argument("--key", metavar="FILE",
                   help="your SSH private key (or the public key of one held by ssh-agent) to sign with")
    p.add_argument("--identity", metavar="EMAIL",
                   help="who you are, as the allowed-signers file names you (refused if it is the plan's author)")
    p.add_argument("--allowed-signers", metavar="FILE",
                   help=f"check the signature against this allowed-signers file (default: {approval.SIGNERS_ENV})")
    p.add_argument("--yes", action="store_true", help="sign without asking to confirm")
    cli.add_json_option(p)
    return p


def main(argv=None) -> int:
    """Show or approve a plan; returns a `cli.ExitCode` (every error a user can cause is one line)."""
    return cli.run_script(_main, argv, script="approve_plan.py", kind="plan")


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if not args.show and (not args.key or not args.identity):
        raise UsageError("give --key FILE and --identity EMAIL to approve (or --show to only read the plan)")
    plan = load_plan(args.plan)
    signers = args.allowed_signers or os.environ.get(approval.SIGNERS_ENV) or None
    json_summary.record("plan", plan={"path": plan.path, "sha256": plan.sha256, "author": plan.author,
                                      "kind": plan.kind, "target": plan.data.get("target")})
    print("\n".join(summary_lines(plan)))
    if args.show:
        return _show(plan, signers)
    return _approve(plan, args.key, args.identity, signers, confirmed=args.yes)


def _status(plan: Plan, signers: str | None) -> tuple[approval.Approval | None, str]:
    """The plan's approval (None when there is none, or it cannot be checked), and one line saying so."""
    if not os.path.exists(signature_path(plan.path)):
        return None, f"not approved: no signature {signature_path(plan.path)}"
    if not signers:
        return None, (f"signed ({signature_path(plan.path)}), not checked: give --allowed-signers FILE "
                      f"(or {approval.SIGNERS_ENV})")
    try:   # checked with the system ssh-keygen, as a run checks it (approval.verify), not the one on PATH
        found = approval.verify(plan, signers)
    except UsageError as exc:
        return None, f"NOT APPROVED: {exc}"
    return found, f"approved by {found.approved_by}, key {found.key_fingerprint}"


def _show(plan: Plan, signers: str | None) -> int:
    found, line = _status(plan, signers)
    print(f"approval  {line}")
    json_summary.record("plan", approval=None if found is None else found.to_json(), approval_line=line)
    return ExitCode.OK if found is not None else ExitCode.FAILED


def _approve(plan: Plan, key: str, identity: str, signers: str | None, *, confirmed: bool) -> int:
    author = plan.author
    if author is not None and author.strip().lower() == identity.strip().lower():
        raise UsageError(f"you ({identity}) made this plan: a second person must approve it")
    if plan.data.get("complete") is not True:
        raise UsageError(f"{plan.path} is an incomplete preview: it can never unlock a run; preview again")
    if not confirmed:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on: read the summary above, then add --yes")
        answer = input(f"Approve this plan as {identity}? Type yes to sign: ").strip().lower()
        if answer not in ("y", "yes"):
            print("Not approved; nothing was written.")
            return ExitCode.FAILED
    if author is None:   # no run could tell its approver from its author: signing it would approve nothing
        raise UsageError(f"{plan.path} names no author (its preview had no set to do, or could not ask DevRev who "
                         f"ran it): nothing to approve; preview again when there are sets to merge")
    signature = approval.sign(plan, key)
    path = signature_path(plan.path)
    earlier = _read_earlier(path)
    atomic_write_bytes(path, signature)
    if signers:   # the run's own check, now: a signature that approves nothing is not left beside the plan
        found, line = _status(plan, signers)
        if found is not None and not any(approval.names(p, identity) for p in found.principals):
            given = ", ".join(found.principals)
            found, line = None, (f"NOT APPROVED: the allowed signers give this key to {given}, "
                                 f"not to --identity {identity}")
        if found is None:
            _put_back(path, earlier)
            print(f"approval  {line}")
            print(f"Not signed: {path} was {'left as it was' if earlier is not None else 'not written'}.")
            return ExitCode.FAILED
        print(f"Signed: {path}")
        print(f"approval  {line}")
        json_summary.record("plan", signature=path, approved_by=found.approved_by, approval=found.to_json())
        return ExitCode.OK
    print(f"Signed: {path} (not checked: give --allowed-signers FILE or {approval.SIGNERS_ENV} to check it now)")
    json_summary.record("plan", signature=path, approved_by=identity)
    return ExitCode.OK


def _read_earlier(path: str) -> bytes | None:
    """The signature a plan already had (put back if the new one approves nothing)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def _put_back(path: str, earlier: bytes | None) -> None:
    if earlier is not None:
        atomic_write_bytes(path, earlier)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
