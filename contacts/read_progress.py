"""A progress line while a big contacts CSV is read, so a long silence never looks like a hang.

Reading, checking and grouping half a million rows takes seconds before anything else can
be said. On stderr: a first line at once for a big file ("reading contacts.csv (92.8 MiB)
..."); then, once reading has taken a second, rows read and MiB of MiB, on a terminal as
one updating line (tqdm, which the console's log lines are written around), in a log or a
pipe as a line every few seconds at most; the line that ends it says what was read. A
file read within the second prints nothing. The clock is injectable (tests use a fake one).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
ANNOUNCE_BYTES = 20 << 20     # a file this big takes over a second: its first line is printed at once
SHOW_AFTER = 1.0              # seconds of reading before the progress line appears
PIPE_INTERVAL = 5.0           # seconds between progress lines in a log or a pipe
_MIB = float(1 << 20)


def _mib(n: int) -> str:
    return f"{n / _MIB:.1f}"


class ReadProgress:
    """Reports the rows and bytes a pass over the CSV has read (`update`), then `done`.

    stream: where it writes (None: sys.stderr at start); clock: seconds, monotonic;
    tty: whether the stream is a terminal (None: ask it)."""

    def __init__(self, path: str, *, stream: Any = None, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, announce_bytes: int | None = None):
        self.name = os.path.basename(path) or path
        try:
            self.size: int | None = os.stat(path).st_size
        except (OSError, ValueError):
            self.size = None          # the reader says why it cannot read it
        self._stream = stream
        self._clock = clock
        self._tty = tty
        self._announce = ANNOUNCE_BYTES if announce_bytes is None else announce_bytes
        self._started = 0.0
        self._announced = False
        self._shown = False           # the progress line (or a pipe's first progress line) is out
        self._last_line = 0.0
        self._bar: Any = None

    @property
    def stream(self) -> Any:
        return sys.stderr if self._stream is None else self._stream

    @property
    def is_tty(self) -> bool:
        if self._tty is None:
            try:
                self._tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                self._tty = False
        return self._tty

    def start(self) -> None:
        """Reading begins: a big file's first line now (before the byte scan)."""
        self._started = self._clock()
        if self.size is not None and self.size >= self._announce:
            self._say_reading()

    def update(self, rows: int, position: int) -> None:
        """`rows` read so far, `position` bytes into the file: the line, if reading has taken a second."""
        now = self._clock()
        elapsed = now - self._started
        if elapsed < SHOW_AFTER:
            return
        if not self._announced:
            self._say_reading()
        if self.is_tty:
            self._draw(rows, position)
        elif not self._shown or now - self._last_line >= PIPE_INTERVAL:
            self._write(f"reading {self.name}: {rows:,} rows, {_mib(position)} of {_mib(self.size or 0)} MiB")
            self._last_line = now
        self._shown = True

    def done(self, rows: int) -> None:
        """Reading and grouping are over: the last line, only if anything was said (the log file
        always gets it)."""
        self.close()
        line = f"read {self.name}: {rows:,} rows ({_mib(self.size or 0)} MiB) in {self._clock() - self._started:.1f} s"
        log.debug("%s", line)
        if self._announced:
            self._write(line)

    def close(self) -> None:
        """Leave the terminal's line clean when reading stops on an error (the error follows)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _say_reading(self) -> None:
        self._announced = True
        self._write(f"reading {self.name} ({_mib(self.size or 0)} MiB) ...")

    def _draw(self, rows: int, position: int) -> None:
        total, done = round((self.size or 0) / _MIB, 1), round(position / _MIB, 1)
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=min(done, total), file=self.stream, leave=False,
                             dynamic_ncols=True, mininterval=0.2, desc=f"reading {self.name}: {rows:,} rows",
                             bar_format="{desc}, {n:.1f} of {total:.1f} MiB |{bar}| [{elapsed}<{remaining}]")
        self._bar.set_description_str(f"reading {self.name}: {rows:,} rows", refresh=False)
        self._bar.update(min(done, total) - self._bar.n)

    def _write(self, line: str) -> None:
        if self._bar is not None:
            from tqdm import tqdm
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
