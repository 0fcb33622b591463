"""Who may call the service: this machine only, unless an API token guards the ``/v1`` routes.

``heimdall serve`` binds 127.0.0.1 by default. Binding any other interface
(``0.0.0.0``, a LAN address, a host name) is refused unless an API token is
set (``--token`` or the ``HEIMDALL_TOKEN`` environment variable): without one,
anybody on the network could use the service. With a token, every request to
``/v1`` and below must carry ``Authorization: Bearer <token>`` (RFC 6750 §2.1),
compared in constant time (:func:`hmac.compare_digest`); a missing or wrong
token gets 401 before the body is read. A token set on loopback is enforced
too. ``/health`` (and the OpenAPI schema and docs) stay open.

The service speaks plain HTTP: on an untrusted network put it behind a reverse
proxy that terminates TLS, or the token travels in clear text.
"""

from __future__ import annotations

import hmac
import ipaddress
import string
from typing import Any

from heimdall.errors import HeimdallError
from heimdall.serve.limits import ASGIApp, Receive, Scope, Send, json_response

#: Shortest accepted API token, characters (``secrets.token_urlsafe(32)`` gives 43).
MIN_TOKEN_CHARS = 16
#: Characters a token may use (it travels in an HTTP header).
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/=")
#: The guarded path prefix.
PROTECTED_PREFIX = "/v1"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for anything else."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: may resolve to any interface
        return False


def check_token(token: str | None) -> str | None:
    """The token to enforce (None when unset or empty); HeimdallError for a weak or malformed one."""
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise HeimdallError(
            f"--token / HEIMDALL_TOKEN: {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    bad = sorted(set(token) - _TOKEN_CHARS)
    if bad:
        raise HeimdallError(
            f"--token / HEIMDALL_TOKEN: characters {''.join(bad)!r} not allowed "
            "(letters, digits and -._~+/= only: it is sent in an HTTP header)"
        )
    return token


def check_exposure(host: str, token: str | None) -> str | None:
    """Refuse to bind a non-loopback ``host`` without a token; a warning line when exposed with one.

    Raises
    ------
    HeimdallError
        ``host`` is not loopback and no token is set.

    """
    if is_loopback(host):
        return None
    if token is None:
        raise HeimdallError(
            f"refusing to serve on {host!r} without an API token: anybody who can reach this machine could "
            "use the service. Set --token or HEIMDALL_TOKEN (clients send 'Authorization: Bearer <token>'), "
            "or bind 127.0.0.1"
        )
    return (
        f"warning: serving on {host!r}, reachable from other machines; /v1 calls need the API token. "
        "Plain HTTP: use a TLS reverse proxy on untrusted networks."
    )


class BearerToken:
    """Wrap an ASGI app so that requests under ``/v1`` need ``Authorization: Bearer <token>`` (else 401)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("ascii")

    def _authorised(self, scope: Scope) -> tuple[bool, str]:
        values = [v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"]
        if not values:
            return False, "missing API token: send the header 'Authorization: Bearer <token>'"
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False, "the Authorization header must be 'Bearer <token>'"
        if len(values) == 1 and hmac.compare_digest(credentials.strip(), self._token):
            return True, ""
        return False, "wrong API token"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token of requests under ``/v1``; pass everything else on."""
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and (path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")):
            ok, message = self._authorised(scope)
            if not ok:
                await json_response(send, 401, message, [(b"www-authenticate", b'Bearer realm="heimdall"')])
                return
        await self.app(scope, receive, send)


def document_bearer(app: Any) -> None:
    """Declare the bearer token in the OpenAPI schema of a FastAPI ``app`` for its ``/v1`` operations.

    ``/docs`` then offers an "Authorize" button; the check itself is :class:`BearerToken`.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerToken"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "The server's API token (--token / HEIMDALL_TOKEN).",
            }
            for path, operations in schema.get("paths", {}).items():
                if path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearerToken": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
