"""A second person's approval of a plan: an SSH signature checked against an allowed-signers file.

The approver signs the plan's exact bytes with their own key (`ssh-keygen -Y sign`, namespace
NAMESPACE; approve_plan.py does it); the signature lives beside the plan (`PLAN.json.sig`). A run
that requires approval (--require-approval, or DEVREV_REQUIRE_APPROVAL=1 made permanent in the
target's environment or .env) takes only a plan whose signature verifies for those bytes, by a key
the allowed-signers file (DEVREV_ALLOWED_SIGNERS) gives to someone other than the plan's author
(the preview's actor block). Every refusal is one line, before any call to DevRev. ssh-keygen is
OpenSSH's own tool, on every admin's machine: no new dependency, keys people already hold (and
their agents and hardware keys), and an allowed-signers file that git uses the same way.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Any

from plumbing.cli import UsageError
from runs.plan_file import Plan, load_plan, signature_path

log = logging.getLogger(__name__)

NAMESPACE = "devrev-merge-plan"   # a signature made for git or a login never passes for a plan's
REQUIRE_ENV = "DEVREV_REQUIRE_APPROVAL"
SIGNERS_ENV = "DEVREV_ALLOWED_SIGNERS"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
_GOOD = re.compile(r'^Good "[^"]*" signature for (?P<who>.+) with (?P<type>\S+) key (?P<fp>\S+)\s*$', re.M)
VERIFY_TIMEOUT_S = 60


class NotApproved(UsageError):
    """A plan a run may not take (not signed, signed by its author or an unknown key, changed since)."""


@dataclass(frozen=True)
class Policy:
    """Whether a real run needs an approved plan, and whose signatures count."""
    required: bool
    allowed_signers: str | None

    @classmethod
    def of(cls, require_flag: bool, signers_option: str | None) -> "Policy":
        """Approval is required when ANY source says so: --require-approval, DEVREV_REQUIRE_APPROVAL
        in the environment, or in the working folder's .env (read directly: an "off" in the
        environment never beats an "on" in .env, nor the other way). The allowed signers:
        DEVREV_ALLOWED_SIGNERS (environment or .env; the two naming different files is refused) is
        the permanent setting, and an --allowed-signers naming another file is refused; without
        it, --allowed-signers."""
        dotenv = _dotenv()
        required = require_flag
        for where, value in (("the environment", os.environ.get(REQUIRE_ENV)), (".env", dotenv.get(REQUIRE_ENV))):
            raw = (value or "").strip().lower()
            if raw not in _TRUE + _FALSE:
                raise UsageError(f"{REQUIRE_ENV}={raw!r} (in {where}): write 1 (a run needs an approved plan) or 0")
            required = required or raw in _TRUE
        in_env, in_dotenv = os.environ.get(SIGNERS_ENV) or None, dotenv.get(SIGNERS_ENV) or None
        if in_env and in_dotenv and not _same_file(in_env, in_dotenv):   # as for REQUIRE_ENV: neither beats the other
            raise UsageError(f"{SIGNERS_ENV} names {in_env} in the environment and {in_dotenv} in .env: two "
                             f"allowed-signers files, and neither counts over the other; make them the same")
        permanent = in_env or in_dotenv
        if permanent and signers_option and not _same_file(permanent, signers_option):
            raise UsageError(f"--allowed-signers {signers_option} is not the allowed signers {SIGNERS_ENV} names "
                             f"({permanent}): where {SIGNERS_ENV} is set, no other file counts")
        return cls(required=required, allowed_signers=permanent or signers_option or None)


def _dotenv() -> dict[str, str | None]:
    """The working folder's .env as written (not through os.environ, where the environment wins)."""
    path = os.path.join(os.getcwd(), ".env")
    if not os.path.isfile(path):
        return {}
    from dotenv import dotenv_values
    try:
        return dict(dotenv_values(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} cannot be read ({exc}): it may set {REQUIRE_ENV}") from None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class Approval:
    """Who approved a plan: the allowed signer's principal, its key's fingerprint, the signature
    file; `principals`: every principal the allowed-signers file gives the signing key (not in
    the reports: the run checks its own DevRev user against them, check_runner)."""
    approved_by: str
    key_fingerprint: str
    signature: str
    principals: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"approved_by": self.approved_by, "key_fingerprint": self.key_fingerprint, "signature": self.signature}


@dataclass(frozen=True)
class CheckedPlan:
    """A plan a run may follow, and its approval (None: not required, and none checked)."""
    plan: Plan
    approval: Approval | None
    required: bool = False   # the policy required the approval (then the runner must be known)

    def to_json(self) -> dict[str, Any]:
        """The reports' and the --json summary's "plan" block."""
        a = self.approval
        return {"path": self.plan.path, "sha256": self.plan.sha256, "author": self.plan.author,
                "approved_by": a.approved_by if a else None, "key_fingerprint": a.key_fingerprint if a else None,
                "signature": a.signature if a else None}


SYSTEM_SSH_KEYGEN = ("/usr/bin/ssh-keygen", "/usr/local/bin/ssh-keygen", "/opt/homebrew/bin/ssh-keygen")


def _system_tool(path: str) -> bool:
    """A file only root can change (owned by root, not writable by group or others)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def ssh_keygen(*, checking: bool = False) -> str:
    """OpenSSH's ssh-keygen (8.2 or later signs and verifies files); UsageError when missing.
    `checking` (a run verifying an approval): a system one first (SYSTEM_SSH_KEYGEN, owned by
    root), so a fake ssh-keygen earlier on PATH cannot say "Good signature"; PATH only when there
    is none (with a WARNING). Signing (approve_plan.py) takes the one on PATH."""
    if checking:
        system = next((p for p in SYSTEM_SSH_KEYGEN if _system_tool(p)), None)
        if system is not None:
            return system
    found = shutil.which("ssh-keygen") or ("/usr/bin/ssh-keygen" if os.path.exists("/usr/bin/ssh-keygen") else None)
    if found is None:
        raise UsageError("ssh-keygen (OpenSSH 8.2 or later) is not installed: it signs and checks plans")
    if checking:
        log.warning("no system ssh-keygen (%s, owned by root): the approval is checked with %s from PATH",
                    ", ".join(SYSTEM_SSH_KEYGEN), found)
    return found


def sign(plan: Plan, key: str) -> bytes:
    """The armoured signature of the plan's bytes by `key` (a private key file, or the public one of
    a key held by ssh-agent); ssh-keygen asks for a passphrase on the terminal if it needs one."""
    if not os.path.exists(key):
        raise UsageError(f"--key {key}: no such file")
    done = subprocess.run([ssh_keygen(), "-Y", "sign", "-f", key, "-n", NAMESPACE], input=plan.raw,
                          capture_output=True, check=False)
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        why = " ".join(done.stderr.decode("utf-8", "replace").split()) or f"exit {done.returncode}"
        raise UsageError(f"ssh-keygen could not sign with {key}: {why}")
    return done.stdout


def _allowed_signers(path: str, *, runner: bool = False) -> str:
    """The allowed-signers file, if it is one that only its owner can change (`runner`: a run
    that requires approval warns when that owner is the user running it)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UsageError(f"the allowed signers {path} cannot be read ({exc.strerror or exc}): "
                         f"--allowed-signers FILE or {SIGNERS_ENV}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"the allowed signers {path} is not a regular file")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"the allowed signers {path} can be changed by others (mode {stat.S_IMODE(info.st_mode):o}): "
                         f"chmod go-w it; whoever can edit it can approve any plan")
    if runner and info.st_uid == os.geteuid() and info.st_mode & stat.S_IWUSR:
        log.warning("the allowed signers %s can be changed by the user running this (%s): whoever can edit it can "
                    "approve any plan; make it belong to someone else (e.g. root)", path, _os_user())
    folder = os.path.dirname(os.path.abspath(path))
    if runner and os.access(folder, os.W_OK):
        log.warning("the folder %s that holds the allowed signers can be written by the user running this (%s): "
                    "they can put another file in its place and approve any plan; keep it in a folder only "
                    "someone else can change (e.g. root's)", folder, _os_user())
    return path


def _os_user() -> str:
    try:
        import getpass
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


# ---------------------------------------------------------------- the signature's key, every line for it
def _wire_string(blob: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(blob):
        raise ValueError("short")
    size = int.from_bytes(blob[at:at + 4], "big")
    if at + 4 + size > len(blob):
        raise ValueError("short")
    return blob[at + 4:at + 4 + size], at + 4 + size


def signature_key(armored: bytes) -> bytes:
    """The public key blob inside an armored SSHSIG signature (ValueError when it is not one)."""
    text = armored.decode("ascii", "replace")
    begin, end = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
    if begin not in text or end not in text:
        raise ValueError("not an SSH signature")
    body = "".join(text.split(begin, 1)[1].split(end, 1)[0].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if not blob.startswith(b"SSHSIG") or len(blob) < 10:
        raise ValueError("no SSHSIG magic")
    key, _ = _wire_string(blob, 10)   # after the magic and the uint32 version
    return key


def fingerprint(key_blob: bytes) -> str:
    """As ssh-keygen -l prints it: SHA256 of the key blob, base64 without padding."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def _first_field(line: str) -> tuple[str, str] | None:
    """A line's principals field and the rest, as OpenSSH's strdelimw splits it (a double-quoted
    stretch kept whole, its quotes removed); None when a quote is not closed."""
    at = next((i for i, c in enumerate(line) if c in ' \t"'), None)
    if at is None:
        return line, ""
    if line[at] == '"':
        close = line.find('"', at + 1)
        if close < 0:
            return None
        return line[:at] + line[at + 1:close], line[close + 1:].lstrip(" \t")
    return line[:at], line[at:].lstrip(" \t")


def _past_options(text: str) -> str | None:
    """What follows the options field (OpenSSH's sshkey_advance_past_options: a `\\"` inside
    them is an escaped quote, not the end of a quoted stretch); None for an unclosed quote."""
    quoted, at = False, 0
    while at < len(text) and (quoted or text[at] not in " \t"):
        if text[at] == "\\" and text[at + 1:at + 2] == '"':
            at += 1
        elif text[at] == '"':
            quoted = not quoted
        at += 1
    if quoted:
        return None
    return text[at:].lstrip(" \t")


def _key_at(text: str) -> bytes | None:
    """The key blob when `text` starts with "TYPE BASE64" (None when it does not)."""
    parts = text.split(None, 2)
    if len(parts) < 2 or not _key_types().match(parts[0]):
        return None
    try:
        return base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def _parsed(line: str) -> tuple[list[str], bytes] | None:
    """(principals, key blob) of one allowed-signers line as OpenSSH reads it: principals, then
    the key, or options then the key; None when it does not parse."""
    first = _first_field(line)
    if first is None or not first[1]:
        return None
    principals, rest = first
    blob = _key_at(rest)
    if blob is None:
        after = _past_options(rest)
        blob = _key_at(after) if after else None
    if blob is None:
        return None
    return [p for p in principals.split(",") if p], blob


def _key_types() -> re.Pattern[str]:
    return re.compile(r"^(ssh-|ecdsa-|sk-|rsa-|webauthn-)\S+$")


def signer_lines(path: str) -> list[tuple[list[str], bytes]]:
    """Every line of an allowed-signers file as (its principals, its key blob), whatever its
    options (namespaces=, valid-after=, valid-before=, cert-authority). A line that does not
    parse is left out (ssh-keygen cannot match it either); principals_of reads those that hold
    the signature's key conservatively."""
    return [parsed for _, raw in _signer_text(path) if (parsed := _parsed(raw)) is not None]


def _signer_text(path: str) -> list[tuple[int, str]]:
    """The allowed-signers file's lines that are not blank or comments, with their numbers."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"the allowed signers {path} cannot be read ({exc.strerror or exc})") from None
    return [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), 1)
            if raw.strip() and not raw.strip().startswith("#")]


def principals_of(path: str, key_blob: bytes) -> list[str]:
    """Every principal the allowed-signers file gives the key (all its lines, not only the first).
    Conservatively: a line holding the key's base64 as a token also gives it its first field's
    principals (comma-split, quotes removed), however the rest parses; such a line that does not
    parse at all is refused (UsageError), as no one can say what ssh-keygen makes of it."""
    found: list[str] = []
    wanted = base64.b64encode(key_blob).decode()
    for number, raw in _signer_text(path):
        parsed = _parsed(raw)
        names: list[str] = []
        if parsed is not None and parsed[1] == key_blob:
            names += parsed[0]
        if wanted in raw.split():
            if parsed is None:
                raise UsageError(f"the allowed signers {path}, line {number}: it holds the plan's signing key but "
                                 f"cannot be read (an unclosed quote, no key type?): fix the line")
            names += [p for p in raw.split()[0].replace('"', "").split(",") if p]
        for principal in names:
            if principal not in found:
                found.append(principal)
    return found


def _pattern(principal: str) -> re.Pattern[str]:
    text = principal.strip().lstrip("!")   # a negation counts as naming what it names (conservative)
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text),
                      re.IGNORECASE | re.DOTALL)


def names(principal: str, email: str) -> bool:
    """Does an allowed-signers principal (a name or a pattern with OpenSSH's * and ?, e.g.
    *@example.com; case-insensitive; !negated counted as naming it) name `email`?"""
    return _pattern(principal).fullmatch(email.strip()) is not None


def verify(plan: Plan, allowed_signers: str, *, runner: bool = False) -> Approval:
    """The approval of `plan` by its signature beside it; NotApproved (one line) when there is
    none, its key is no allowed signer's, the plan's bytes changed since it was signed, or the
    key belongs to the plan's author (by principal: any line of the file that gives the key a
    principal naming the author, whatever its options) or the plan names no author to tell apart
    from its approver. Checked with the system ssh-keygen whoever checks (approve_plan.py too);
    `runner`: a run checking it (warnings for a signers file or folder the runner can change)."""
    sig = signature_path(plan.path)
    name = os.path.basename(plan.path)
    if not os.path.isfile(sig):
        raise NotApproved(f"{name} is not approved: no signature {sig} beside it (a second person signs it with "
                          f"approve_plan.py {name} --key KEY --identity EMAIL)")
    signers = _allowed_signers(allowed_signers, runner=runner)
    try:
        with open(sig, "rb") as fh:
            key = signature_key(fh.read(1 << 20))
    except (OSError, ValueError):
        raise NotApproved(f"{sig} is not an SSH signature: not approved") from None
    principals = principals_of(signers, key)
    if not principals:
        raise NotApproved(f"{name} is signed by a key no allowed signer in {signers} holds: not approved")
    tool = ssh_keygen(checking=True)   # the system one, for approve_plan.py --show as for a run
    good, approved_by = None, None
    for principal in principals:   # the one whose line ssh-keygen accepts (namespace, validity)
        checked = subprocess.run([tool, "-Y", "verify", "-f", signers, "-I", principal, "-n", NAMESPACE, "-s", sig],
                                 input=plan.raw, capture_output=True, check=False, timeout=VERIFY_TIMEOUT_S)
        good = _GOOD.search(checked.stdout.decode("utf-8", "replace")) if checked.returncode == 0 else None
        if good is not None:
            approved_by = principal
            break
    if good is None or approved_by is None or good["fp"] != fingerprint(key):
        raise NotApproved(f"{name} changed since it was signed (or {sig} was not made for a plan): the signature "
                          f"does not verify; preview and approve again")
    author = plan.author
    if author is None:
        raise NotApproved(f"{name} names no author (its preview had no set to do, or could not ask DevRev who ran "
                          f"it), so its approver "
                          f"cannot be told apart from it: preview again, then approve")
    mine = [p for p in principals if names(p, author)]
    if mine:
        raise NotApproved(f"{name} is signed by its own author's key ({author}, allowed signer {mine[0]}): a second "
                          f"person must approve it")
    return Approval(approved_by=approved_by, key_fingerprint=good["fp"], signature=sig, principals=tuple(principals))


def check_runner(named: CheckedPlan | None, actor: dict[str, Any]) -> None:
    """After the run asked DevRev who its token is (the actor block), before any write: refuse
    (NotApproved, one line) a plan approved with a key the allowed signers also give the DevRev
    user running it (the author field is the author's to write, the token is not), or a run
    whose DevRev user is unknown while approval is required."""
    if named is None or named.approval is None:
        return
    user = actor.get("devrev_user") if isinstance(actor, dict) else None
    email = user.get("email") if isinstance(user, dict) else None
    if not isinstance(email, str) or not email.strip():
        if named.required:
            raise NotApproved("this run cannot tell who it runs as (dev-users.self did not answer an email), so "
                              "its approver cannot be told apart from it: nothing was changed; run again")
        return
    mine = [p for p in named.approval.principals if names(p, email)]
    if mine:
        raise NotApproved(f"{os.path.basename(named.plan.path)} is approved with a key the allowed signers give "
                          f"to {email}, who runs it (allowed signer {mine[0]}): a second person must approve it; "
                          f"nothing was changed")


def checked_plan(plan_path: str | None, kind: str, policy: Policy, *, skip_preview_check: bool) -> CheckedPlan | None:
    """The plan a real run follows (`plan_path`, of `kind`), approved as `policy` requires; None
    when no plan is named and none is required (the newest preview unlocks the run as before).
    Raises UsageError / NotApproved with one line; makes no call to DevRev."""
    if policy.required and skip_preview_check:
        raise NotApproved("--skip-preview-check cannot go with --require-approval (or DEVREV_REQUIRE_APPROVAL): a "
                          "run on this DevRev takes an approved plan")
    if plan_path is None:
        if policy.required:
            raise NotApproved("this run needs an approved plan (--require-approval or DEVREV_REQUIRE_APPROVAL): "
                              "preview with --plan-out PLAN.json, have a second person approve it with "
                              "approve_plan.py, then run with --plan PLAN.json")
        return None
    plan = load_plan(plan_path, kind)
    approval = None
    if policy.required and not policy.allowed_signers:
        raise UsageError(f"--require-approval needs the allowed signers: --allowed-signers FILE or {SIGNERS_ENV}")
    if policy.required or (policy.allowed_signers and os.path.exists(signature_path(plan.path))):
        # a signature that is there must hold, required or not
        approval = verify(plan, policy.allowed_signers or "", runner=policy.required)
    elif os.path.exists(signature_path(plan.path)):
        log.warning("the plan's signature %s is not checked: no allowed signers (--allowed-signers or %s)",
                    signature_path(plan.path), SIGNERS_ENV)
    if approval is not None:
        log.info("plan %s (sha256 %s, by %s) approved by %s, key %s", plan.path, plan.sha256, plan.author,
                 approval.approved_by, approval.key_fingerprint)
    else:
        log.info("plan %s (sha256 %s, by %s), not approved (approval not required)", plan.path, plan.sha256,
                 plan.author)
    return CheckedPlan(plan, approval, required=policy.required)


def add_plan_options(parser: Any, script: str) -> None:
    """--plan, --plan-out, --require-approval and --allowed-signers (the merge's and the restore's)."""
    parser.add_argument("--plan-out", metavar="FILE",
                        help="with --preview: also write the preview to FILE, a plan a second person approves "
                             "(approve_plan.py) and a run follows with --plan")
    parser.add_argument("--plan", metavar="FILE",
                        help=f"follow this plan (a preview written by {script} --preview --plan-out, or a preview "
                             f"report): the run does exactly it or refuses; no newer preview replaces it")
    parser.add_argument("--require-approval", action="store_true",
                        help=f"refuse a run without a --plan signed by an allowed signer other than its author "
                             f"(made permanent for a DevRev by {REQUIRE_ENV}=1)")
    parser.add_argument("--allowed-signers", metavar="FILE",
                        help=f"the ssh-keygen allowed-signers file whose keys may approve plans (default: "
                             f"{SIGNERS_ENV})")


def check_plan_options(*, preview: bool, plan: str | None, plan_out: str | None, skip_preview_check: bool) -> None:
    """The plan options checked against the others (UsageError for a combination that cannot work)."""
    if plan_out and not preview:
        raise UsageError("--plan-out only goes with --preview (it writes the preview as a plan)")
    if plan and preview:
        raise UsageError("--plan goes with a real run (the run follows it); a preview writes one with --plan-out")
    if plan and skip_preview_check:
        raise UsageError("--plan and --skip-preview-check contradict each other: the plan is the preview the run "
                         "is held to")
