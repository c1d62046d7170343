"""The service's errors, each with the HTTP status and code it is answered with."""

from __future__ import annotations

from ..errors import InputError, NrtError


class ApiError(NrtError):
    """An error the ingress answers as ``{"error": code, "detail": detail}`` with ``status``."""

    status = 500
    code = "internal"

    def __init__(
        self, detail: str, *, status: int | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status or self.status
        self.code = code or self.code
        self.headers = headers or {}


class BadAudio(ApiError, InputError):
    """The upload is not audio nrt can use: empty, unreadable, silent, non-finite."""

    status, code = 400, "bad_audio"


class Invalid(ApiError, InputError):
    """A field's value is outside what is accepted."""

    status, code = 422, "invalid_request"


class TooLarge(ApiError, InputError):
    status, code = 413, "too_large"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    """The request clashes with what the service holds (a clip id taken, a bundle of another model)."""

    status, code = 409, "conflict"


class Overloaded(ApiError):
    """The queue is full: try again later."""

    status, code = 503, "overloaded"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"
