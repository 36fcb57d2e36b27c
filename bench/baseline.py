"""The code a bench compares this checkout with, side by side in one run.

`--baseline` takes a checkout folder, or a commit of this repository (default: BASELINE_COMMIT,
1.4.0 and its fixes at the last commit before issues 25 and 26), which is extracted once with `git archive`
into `.bench/baseline-<commit>/` beside the benches' checkout and reused. Every bench that
compares runs both codes in processes of their own, so the two never mix.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_COMMIT = "8178686"   # 1.4.0 (+ fixes): the figures of issue 25's table were taken against it


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", "--base", dest="baseline", default=BASELINE_COMMIT, metavar="DIR|COMMIT",
                        help=f"the code to compare with: a checkout folder, or a commit of this repository "
                             f"(extracted into .bench/; default {BASELINE_COMMIT}: 1.4.0 and its fixes)")


def checkout(value: str) -> str:
    """The folder holding the baseline's code (SystemExit with one line when it cannot be had)."""
    if os.path.isdir(value):
        if not os.path.isfile(os.path.join(value, "merge_contacts.py")):
            raise SystemExit(f"--baseline {value}: not a checkout of this tool (no merge_contacts.py)")
        return os.path.abspath(value)
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", f"{value}^{{commit}}"], check=True,
                                capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"--baseline {value}: neither a folder nor a commit of {ROOT}") from None
    dest = os.path.join(ROOT, ".bench", f"baseline-{commit[:12]}")
    if not os.path.isfile(os.path.join(dest, "merge_contacts.py")):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        work = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=".extract-")
        archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", commit], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", work], input=archive, check=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(work, dest)
    return dest


# ----------------------------------------------------------------------------- shared by the benches' tables
NOT_COMPUTED = "ratio: not computed, a run failed"


def plural(n: int, word: str) -> str:
    """"1 run", "3 runs": the plural only when n is not 1."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def failed_text(codes) -> str:
    """"failed (exit 2)", or "failed (exit 2, -9)" for a side whose runs failed differently."""
    bad = sorted({c for c in codes if c != 0}, key=str)
    return f"failed (exit {', '.join(str(c) for c in bad)})"


def worst(codes) -> int:
    """The first non-zero exit code of `codes`, else 0 (max() would hide a signal's negative code)."""
    return next((c for c in codes if c != 0), 0)
