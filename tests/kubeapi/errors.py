"""Kubernetes-shaped API errors.

Every refusal the test server makes is an :class:`ApiError`, rendered as the ``Status`` object a
real API server sends (``kind: Status``, ``reason``, ``message``, ``details``), so that the client
libraries raise the same ``ApiException`` with the same ``status`` and body as against a cluster.
The messages copy the real ones word for word where code is known to match on them (for example
``exceeded quota:`` or ``the object has been modified``).
"""

from __future__ import annotations

from typing import Any

import kmock

__all__ = ["ApiError", "status_body"]


class ApiError(kmock.KubernetesError):
    """An error with the HTTP status, ``reason`` and ``message`` of a Kubernetes ``Status``.

    It subclasses kmock's ``KubernetesError`` so that kmock reactions (``cluster.kmock[...] <<
    ApiError(...)``) and our own handlers render errors the same way.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # kmock's KubernetesError is a frozen attrs class; initialise it through attrs.
        super().__init__(status=status, reason=reason, message=message, details=details or {})
        object.__setattr__(self, "headers", headers or {})

    headers: dict[str, str]

    def body(self) -> dict[str, Any]:
        return status_body(self.status, self.reason or "", self.message or "", self.details)

    # --- constructors for the errors the server makes, with the real messages -----------------

    @classmethod
    def _about(
        cls,
        code: int,
        reason: str,
        kind: str,
        name: str,
        group: str,
        *,
        before: str = "",
        after: str,
        **details: Any,
    ) -> ApiError:
        """An error about one object: the message names it as ``kind.group "name"`` between
        *before* and *after*; the details name it too (plus *details*)."""
        what = f"{kind}.{group}" if group else kind
        return cls(
            code,
            reason,
            f'{before}{what} "{name}"{after}',
            {"name": name, "group": group, "kind": kind, **details},
        )

    @classmethod
    def not_found(cls, kind_plural: str, name: str, group: str = "") -> ApiError:
        return cls._about(404, "NotFound", kind_plural, name, group, after=" not found")

    @classmethod
    def no_route(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def already_exists(cls, kind_plural: str, name: str, group: str = "") -> ApiError:
        return cls._about(409, "AlreadyExists", kind_plural, name, group, after=" already exists")

    @classmethod
    def conflict(cls, kind_plural: str, name: str, group: str = "", why: str = "") -> ApiError:
        why = why or (
            "the object has been modified; please apply your changes to the latest "
            "version and try again"
        )
        return cls._about(
            409,
            "Conflict",
            kind_plural,
            name,
            group,
            before="Operation cannot be fulfilled on ",
            after=f": {why}",
        )

    @classmethod
    def invalid(
        cls, kind: str, name: str, causes: list[tuple[str, str, str]], group: str = ""
    ) -> ApiError:
        """422: *causes* are ``(field, reason, message)``, e.g. ``("metadata.name",
        "FieldValueRequired", "Required value: name or generateName is required")``."""
        text = ", ".join(f"{field}: {message}" for field, _, message in causes)
        if len(causes) > 1:
            text = "[" + text + "]"
        return cls._about(
            422,
            "Invalid",
            kind,
            name,
            group,
            after=f" is invalid: {text}",
            causes=[{"reason": r, "message": m, "field": f} for f, r, m in causes],
        )

    @classmethod
    def forbidden(cls, kind_plural: str, name: str, why: str, group: str = "") -> ApiError:
        return cls._about(403, "Forbidden", kind_plural, name, group, after=f" is forbidden: {why}")

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message, {})

    @classmethod
    def method_not_allowed(
        cls, message: str = "the server does not allow this method on the requested resource"
    ) -> ApiError:
        return cls(405, "MethodNotAllowed", message, {})

    @classmethod
    def unsupported_media_type(cls, content_type: str, accepted: list[str]) -> ApiError:
        return cls(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {', '.join(accepted)}",
            {},
        )

    @classmethod
    def gone(cls, requested: int | str, oldest: int) -> ApiError:
        return cls(410, "Expired", f"too old resource version: {requested} ({oldest})", {})

    @classmethod
    def internal(cls, message: str = "injected fault") -> ApiError:
        return cls(
            500,
            "InternalError",
            f"Internal error occurred: {message}",
            {"causes": [{"message": message}]},
        )

    @classmethod
    def too_many_requests(cls, retry_after: int = 1) -> ApiError:
        return cls(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {"retryAfterSeconds": retry_after},
            {"Retry-After": str(retry_after)},
        )


def status_body(code: int, reason: str, message: str, details: Any = None) -> dict[str, Any]:
    """The ``Status`` object of a failed request, as a real API server sends it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body
