"""Run mypy (settings in pyproject.toml) and hold the line: CI fails if a strict module has any
error, or if the other modules' error count differs from the baseline below.

    python tools/type_ratchet.py            # check (CI runs this)
    python tools/type_ratchet.py --update   # after fixing errors: lower the baseline to today's count

A count above the baseline is a new error: fix it. A count below it is progress: run --update so the
ratchet keeps it (the baseline never goes up by hand without a reason in the commit).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "tools", "type_ratchet_baseline.txt")
_ERROR = re.compile(r"^(?P<path>[^:\s]+\.py):\d+: error: ")


def strict_modules() -> list[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        overrides = tomllib.load(fh)["tool"]["mypy"]["overrides"]
    return [m for o in overrides if o.get("disallow_untyped_defs") for m in o["module"]]


def module_of(path: str) -> str:
    return path[:-3].replace("/", ".").removesuffix(".__init__")


def is_strict(module: str, patterns: list[str]) -> bool:
    return any(module == p or (p.endswith(".*") and module.startswith(p[:-1])) for p in patterns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="write today's count as the new baseline")
    args = parser.parse_args(argv)
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True,
                         text=True)
    if run.returncode not in (0, 1):
        print(run.stdout + run.stderr, file=sys.stderr)
        return 2
    patterns = strict_modules()
    errors = [line for line in run.stdout.splitlines() if _ERROR.match(line)]
    strict = [line for line in errors if is_strict(module_of(_ERROR.match(line)["path"]), patterns)]
    rest = len(errors) - len(strict)
    with open(BASELINE, encoding="utf-8") as fh:
        baseline = int(fh.read().split()[0])
    if args.update:
        with open(BASELINE, "w", encoding="utf-8") as fh:
            fh.write(f"{rest}\n")
        print(f"baseline: {baseline} -> {rest}")
        return 0
    for line in strict:
        print(line)
    print(f"mypy: {len(strict)} errors in strict modules (must be 0); {rest} elsewhere (baseline {baseline})")
    if strict:
        return 1
    if rest > baseline:
        print("\n".join(line for line in errors if line not in strict))
        print(f"new type errors: {rest} > {baseline}; fix them (the list is above)")
        return 1
    if rest < baseline:
        print("fewer type errors than the baseline: run `python tools/type_ratchet.py --update` to keep it so")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
