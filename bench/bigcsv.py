"""A contacts CSV of any size for the benches: a dataset's merge sets, then single contacts.

The merge sets come from devrev_sandbox.dataset (so the emulator knows them); every other
row is a contact alone with its email (skipped as single_contact without an API call),
a few in groups the tool skips for other reasons, shaped like a warehouse export.
"""
from __future__ import annotations

import csv
import random

from devrev_sandbox.dataset import CSV_COLUMNS

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def write_big_csv(path: str, dataset, total_rows: int, seed: int = 1) -> int:
    """Write the dataset's rows, then single contacts up to `total_rows` rows; returns the row count."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        rows = 0
        for row in dataset.rows:
            writer.writerow([row[c] for c in CSV_COLUMNS])
            rows += 1
        n = 0
        while rows < total_rows:
            n += 1
            suffix = "".join(rng.choices(_ALNUM, k=9))
            email = f"person{n}@company{n % 997}.example"
            ref = f"REVU-{suffix}" if n % 3 else "user_" + "".join(rng.choices(_ALNUM, k=22))
            stamp = f"2024-0{1 + n % 9}-1{n % 10}T10:{n % 60:02d}:00.000Z"
            writer.writerow([f"don:identity:dvrv-us-1:devo/1bench:revu/{suffix}{n}", email, ref, f"Person {n}",
                             f"Person Number {n}", str(n % 13), stamp, stamp])
            rows += 1
    return rows
