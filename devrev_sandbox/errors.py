"""The emulator's error answers, in DevRev's flat JSON shape."""
from __future__ import annotations

import json


class ApiError(Exception):
    """An error answer in DevRev's flat shape: {type, message, ...extra}."""

    def __init__(self, status: int, error_type: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.error_type, self.message, self.extra = status, error_type, message, extra

    def body(self) -> dict:
        body = {"message": self.message}
        if self.error_type:
            body["type"] = self.error_type
        body.update(self.extra)
        return body


def json_bytes(obj) -> bytes:
    """A JSON answer body, UTF-8 (non-ASCII kept as is, like DevRev)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")
