"""The DevRev client's errors: one class per way a call can fail, each message saying what to do.

Kept apart from devrev_client so the download and config-check modules raise the same
types without importing the client. Import them from here (devrev_client does not re-export them).
"""
from __future__ import annotations

from typing import Any

from plumbing.cli import UserError


class ConfigError(UserError):
    """Bad configuration the user can fix (missing token, plain-http URL, ...): one line, exit 2."""


class RunInterrupted(Exception):
    """The user asked to stop (Ctrl-C); raised before the next call is sent."""


class DevRevError(Exception):
    """Any failed DevRev call: HTTP status, DevRev error `type`, message, endpoint."""

    hint = ""

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None,
                 endpoint: str | None = None, field_name: str | None = None,
                 retry_after: float | None = None, location: str | None = None, hint: str | None = None,
                 object_ids: tuple[str, ...] = ()):
        self.message = message
        self.status = status
        self.error_type = error_type
        self.endpoint = endpoint
        self.field_name = field_name
        self.retry_after = retry_after
        self.location = location
        # the objects a 403 names ([C] S6 `object_ids`): the refusal is about them, not the whole run
        self.object_ids = tuple(object_ids)
        self.hint = hint if hint is not None else self._default_hint()
        super().__init__(self._render())

    def _default_hint(self) -> str:
        return type(self).hint

    def _render(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        code = " ".join(str(p) for p in (self.status, self.error_type) if p)
        field = f", field {self.field_name}" if self.field_name else ""
        text = f"{where}{self.message}"
        if code:
            text += f" ({code}{field})"
        if self.hint:
            text += f": {self.hint}"
        return text


_NEW_TOKEN = ("make a new personal access token (DevRev settings, Personal Access Token) and put it in "
              "DEVREV_API_TOKEN (the environment or .env), then re-run to resume")
# what a 401's `type` says ([C] S15 error-unauthorized): the advice that fits that cause
UNAUTHORIZED_HINTS = {
    "token_expired": f"the token has expired: {_NEW_TOKEN}",
    "token_revoked": f"the token was revoked: {_NEW_TOKEN}",
    "dev_org_deactivated": ("the DevRev organization of this token is deactivated: a new token will not help; "
                            "ask your DevRev admin or DevRev support"),
    "unauthenticated": "check DEVREV_API_TOKEN (a valid personal access token of a DevRev admin)",
}


class AuthError(DevRevError):
    hint = UNAUTHORIZED_HINTS["unauthenticated"]

    def _default_hint(self) -> str:
        """The advice for the cause a 401 names (`type`), else the class's."""
        if self.status == 401 and self.error_type in UNAUTHORIZED_HINTS:
            return UNAUTHORIZED_HINTS[self.error_type]
        return type(self).hint


class PermissionDeniedError(AuthError):
    hint = "the token's user lacks permission for this call; use an admin's token"

    def _default_hint(self) -> str:
        """A 403 naming its objects is about them: the token may not write those, this set fails."""
        if self.object_ids:
            return (f"the token may not write {', '.join(self.object_ids)}; give the token's user access to "
                    f"it in DevRev, then re-run to resume")
        return type(self).hint


class NotFoundError(DevRevError):
    pass


class BadRequestError(DevRevError):
    pass


class ConflictError(DevRevError):
    pass


class RateLimitError(DevRevError):
    hint = "DevRev kept throttling; re-run later to resume"


class ServerError(DevRevError):
    hint = "DevRev is failing; re-run later to resume"


class TransportError(DevRevError):
    hint = "check the network and DEVREV_BASE_URL; re-run to resume"


class ResponseError(DevRevError):
    """DevRev answered 2xx with a body that is not the JSON the spec promises."""


class MovedError(DevRevError):
    hint = "the object's id changed in DevRev; re-export the contacts CSV"


class DownloadError(DevRevError):
    """An attachment could not be fetched in full from its located URL.

    expired: the URL was refused (401/403/410; expired, or fresh and not yet honoured): locate it again.
    transient: a 5xx, 429, dropped connection, read timeout or a body cut off: the same
    URL may work on a retry."""

    def __init__(self, message: str, *, expired: bool = False, transient: bool = False, cause: str | None = None,
                 **kw: Any) -> None:
        self.expired = expired
        self.transient = transient
        self.cause = cause  # connection_cause() when no connection could be opened
        super().__init__(message, **kw)


class UploadError(DevRevError):
    """A file could not be uploaded to the URL artifacts.prepare gave (restore only).

    transient: a 5xx, 429 or a dropped connection: the same form may work on a retry."""

    def __init__(self, message: str, *, transient: bool = False, cause: str | None = None, **kw: Any) -> None:
        self.transient = transient
        self.cause = cause
        super().__init__(message, **kw)


class RunWideFault(DevRevError):
    """DevRev cannot be reached, or fails every call, whatever the set: the run stops.

    Raised by every call once the client's FaultBreaker has tripped (nothing is sent);
    the message is the one line the user sees."""


# the error a 4xx status raises (any other 4xx: DevRevError)
STATUS_ERRORS = {400: BadRequestError, 401: AuthError, 403: PermissionDeniedError,
                 404: NotFoundError, 409: ConflictError}


def clean_text(text: Any, limit: int = 300) -> str:
    """`text` as one printable line of at most `limit` characters (… when cut): for values
    from DevRev's answers or the user's config that go into messages."""
    raw = "" if text is None else str(text)
    line = "".join(ch if ch.isprintable() else " " for ch in raw).strip()
    return line[:limit] + ("…" if len(line) > limit else "")
