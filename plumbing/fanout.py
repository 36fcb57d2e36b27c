"""One budget of worker threads for sets and for the independent calls inside a set.

With many merge sets, `--workers N` sets run at once and the rate limit is the bound. With
one huge duplicate (an email integration's contact with thousands of tickets), a single
set's calls ran one at a time and the run was bound by latency instead. A `Fanout` holds
N slots: each running set holds one, and a set that has independent calls to make (the
timeline pages of different objects, the downloads of a backup, the updates of a round)
borrows the slots no set is using, so at most N threads ever call DevRev at once. The
calling thread always works on its own items too, so a set never waits for a slot.

    pool = Fanout(4)
    with pool.slot():                                  # a set's thread
        pages = pool.map(read_page, objects)           # results in the order of `objects`

`map` with pool None (or one item) runs in the calling thread: the single-threaded path.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


class Fanout:
    """N slots shared by every thread that calls DevRev (see the module docstring)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError("workers must be 1 or more")
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout") if workers > 1 else None

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block (a set's thread, for the whole set)."""
        with self._slots:
            yield

    def _borrow(self, wanted: int) -> int:
        got = 0
        while got < wanted and self._slots.acquire(blocking=False):
            got += 1
        return got

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """fn(item) for every item, on the calling thread plus the slots free right now;
        results in item order. If any call raises, the items not started are dropped, the
        ones running finish, and the first exception (in item order) is raised."""
        items = list(items)
        executor = self._executor
        helpers = self._borrow(min(len(items) - 1, self.workers - 1)) if executor and len(items) > 1 else 0
        if executor is None or not helpers:   # (no executor: no helpers were borrowed)
            return [fn(item) for item in items]
        results: list[R | None] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        lock = threading.Lock()
        queue = iter(range(len(items)))

        def work() -> None:
            while True:
                with lock:
                    if errors:
                        return
                    index = next(queue, None)
                if index is None:
                    return
                try:
                    results[index] = fn(items[index])
                except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                    with lock:
                        errors[index] = exc

        def helper() -> None:
            try:
                work()
            finally:
                self._slots.release()

        # each helper runs in a copy of the caller's context (the log line's subject, cli.log_subject)
        futures = [executor.submit(contextvars.copy_context().run, helper) for _ in range(helpers)]
        work()
        for future in futures:
            future.result()
        if errors:
            raise errors[min(errors)]
        return cast(list[R], results)   # no error: every item's slot holds its result

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def slot_of(pool: Fanout | None) -> contextlib.AbstractContextManager[None]:
    """One of the pool's slots for a set's thread (nothing to hold without a pool)."""
    return pool.slot() if pool is not None else contextlib.nullcontext()


def fan_map(pool: Fanout | None, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """pool.map, or a plain loop in the calling thread when there is no pool."""
    return pool.map(fn, items) if pool is not None else [fn(item) for item in items]


def workers_of(pool: Fanout | None) -> int:
    """The pool's slots: the sets a run takes at once (1 without a pool)."""
    return pool.workers if pool is not None else 1
