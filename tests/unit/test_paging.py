"""Following cursors: sparse pages are followed, an endless cursor ends with one line (no network)."""
import itertools

import pytest

from devrev_api.errors import ResponseError
from devrev_client import DevRevClient


def _client(pages):
    """A client whose calls answer from `pages` (an iterator of (items, next_cursor))."""
    client = DevRevClient("x" * 30, "https://api.devrev.ai")
    client.call = lambda endpoint, body, retry_transient: dict(zip(("works", "next_cursor"), next(pages)))
    return client


def test_empty_and_short_pages_are_followed_while_the_cursor_is_new():
    pages = [([], "c1"), ([], "c2"), ([{"id": "a"}], "c3"), *[([], f"e{n}") for n in range(50)], ([{"id": "b"}], None)]
    client = _client(iter(pages))
    assert [w["id"] for w in client.paginate("works.list", {}, "works")] == ["a", "b"]


def test_a_cursor_that_never_ends_still_ends_with_one_line():
    client = _client(([], f"c{n}") for n in itertools.count())
    client.MAX_EMPTY_PAGES = 20
    with pytest.raises(ResponseError, match="20 empty pages in a row"):
        list(client.paginate("works.list", {}, "works"))
    client = _client(([{"id": f"w{n}"}], f"c{n}") for n in itertools.count())
    client.MAX_PAGES = 30
    with pytest.raises(ResponseError, match="had not ended after 30 pages"):
        list(client.paginate("works.list", {}, "works"))
    assert DevRevClient.MAX_EMPTY_PAGES >= 1000 and DevRevClient.MAX_PAGES >= 10_000   # generous, documented
