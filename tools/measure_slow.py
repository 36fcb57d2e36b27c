"""Measure the suite and rewrite tests/slow_tests.txt: every test that took THRESHOLD seconds
or more (setup, call and teardown together) is marked `slow` by tests/conftest.py, so
`pytest -m "not slow"` (the quick command, CONTRIBUTING.md) stays under a minute.

    python tools/measure_slow.py                 # runs the whole suite once (a few minutes)
    python tools/measure_slow.py --from out.txt  # or reads a saved `pytest --durations=0` output
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIST = os.path.join(ROOT, "tests", "slow_tests.txt")
THRESHOLD = 0.5   # seconds
_LINE = re.compile(r"^(?P<seconds>\d+\.\d+)s (?:setup|call|teardown)\s+(?P<node>\S.*)$")


def durations(text: str) -> dict[str, float]:
    """Seconds per test node id, its setup, call and teardown added up."""
    total: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            total[match["node"]] += float(match["seconds"])
    return dict(total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", metavar="FILE", help="a saved `pytest --durations=0` output")
    args = parser.parse_args(argv)
    if args.source:
        with open(args.source, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0"],
                              cwd=ROOT, capture_output=True, text=True).stdout
    slow = sorted(((seconds, node) for node, seconds in durations(text).items() if seconds >= THRESHOLD),
                  reverse=True)
    if not slow and not durations(text):
        print("no durations found: is that a `pytest --durations=0` output?", file=sys.stderr)
        return 2
    with open(LIST, "w", encoding="utf-8") as fh:
        fh.write(f"# tests measured at {THRESHOLD} s or more (tools/measure_slow.py); tests/conftest.py "
                 f"marks them slow\n")
        fh.writelines(f"{node}  # {seconds:.1f} s\n" for seconds, node in slow)
    print(f"{len(slow)} slow tests written to {os.path.relpath(LIST, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
