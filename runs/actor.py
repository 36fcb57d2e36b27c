"""Who ran it: the block every report carries, so an audit can tie a change to a person.

A bulk merge in production is answered for by someone: the report names the DevRev user the
token belongs to (dev-users.self, asked once per run and shared with the preflight), the OS
user and host the command ran as, and the tool's version. No secret is in it.
"""
from __future__ import annotations

import getpass
import logging
import socket
from typing import Any

from devrev_api.errors import AuthError, DevRevError
from devrev_client import DevRevClient
from plumbing.version import TOOL_VERSION

log = logging.getLogger(__name__)


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):   # no passwd entry (a container run as a bare uid)
        return None


def actor_block(client: DevRevClient | None, *, ask: bool = True) -> dict[str, Any]:
    """{"devrev_user": {"id", "display_id", "email"} of the token's owner (None when not
    asked: `ask` False, or no client), "os_user", "host", "tool_version"}. A failed
    dev-users.self is noted in "devrev_user_error", never raised (AuthError excepted: the
    run must stop on a refused token as everywhere else)."""
    block: dict[str, Any] = {"devrev_user": None, "os_user": _os_user(), "host": socket.gethostname(),
                             "tool_version": TOOL_VERSION}
    if client is None or not ask:
        return block
    try:
        me = client.get_self()
    except AuthError:
        raise
    except DevRevError as exc:
        log.warning("who ran it: dev-users.self failed (%s); the report names the OS user only", exc)
        block["devrev_user_error"] = str(exc)
        return block
    block["devrev_user"] = {k: me.get(k) for k in ("id", "display_id", "email")}
    return block
