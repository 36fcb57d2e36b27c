"""CSV files admins open in spreadsheets: every cell that could be taken for a formula is escaped.

Shared by the reports and by find_duplicates.py's output, so a contact named `=HYPERLINK(...)`
shows as text wherever the tool writes it. Files are written durably (plumbing.files, atomically).
"""
from __future__ import annotations

import csv
import io
from typing import Any

from plumbing.files import atomic_write_bytes

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet will show as text, never run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    text = str(value)
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_csv(path: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """A CSV file of `rows` (a dict per row, keyed by column), CRLF lines, every cell escaped."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    atomic_write_bytes(path, out.getvalue().encode("utf-8"))
