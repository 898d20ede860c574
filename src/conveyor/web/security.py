"""What makes the dashboard safe to expose: HTTP Basic auth, CSRF protection, read-only mode,
security headers, and reverse-proxy prefixes.

All of it is one pure-ASGI middleware so that every route -- HTML, JSON and static -- gets the
same treatment, plus two helpers the action endpoints call to check the CSRF token.

CSRF, in two layers:

1. Every unsafe request is refused when the browser says it is cross-origin
   (``Sec-Fetch-Site: cross-site|same-site``, or an ``Origin`` whose host is not ours), as Go's
   ``CrossOriginProtection`` that Faktory uses.
2. HTML forms must also carry a token: an HMAC (keyed by a per-app secret) of a random nonce
   kept in an ``HttpOnly; SameSite=Strict`` cookie. JSON API calls carry the same token in an
   ``X-CSRF-Token`` header, or send ``Content-Type: application/json``, which no cross-site page
   can send without a CORS preflight this app never grants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SecurityMiddleware",
    "csrf_token_for",
    "notice_is_genuine",
    "sign_notice",
    "token_is_valid",
]

CSRF_COOKIE = "conveyor_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/health"})
"""Paths served without a password, as Faktory serves /health."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def _sign(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def csrf_token_for(request: Request) -> str:
    """The CSRF token for this browser, creating its nonce if it has none yet.

    The middleware sets the cookie for a nonce created here (``scope["conveyor.csrf_new"]``).
    """
    secret: bytes = request.app.state.csrf_secret
    nonce = request.cookies.get(CSRF_COOKIE) or request.scope.get("conveyor.csrf_new")
    if not nonce:
        nonce = secrets.token_urlsafe(24)
        request.scope["conveyor.csrf_new"] = nonce
    return _sign(secret, nonce)


def token_is_valid(request: Request, token: str | None) -> bool:
    """True when ``token`` is the HMAC of this browser's cookie nonce."""
    nonce = request.cookies.get(CSRF_COOKIE)
    if not nonce or not token:
        return False
    expected = _sign(request.app.state.csrf_secret, nonce)
    return hmac.compare_digest(expected, token)


def sign_notice(request: Request, notice: str) -> str:
    """A short signature for a notice the app itself puts in a redirect URL."""
    digest = hmac.new(request.app.state.csrf_secret, b"notice:" + notice.encode(), "sha256")
    return digest.hexdigest()[:16]


def notice_is_genuine(request: Request, notice: str, signature: str) -> bool:
    return bool(notice) and hmac.compare_digest(sign_notice(request, notice), signature)


def _is_cross_origin(headers: Headers) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    # Behind a proxy that rewrites Host, the public host is in X-Forwarded-Host.
    ours = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").lower()}
    return urlsplit(origin).netloc.lower() not in ours - {""}


def _password_ok(headers: Headers, password: str) -> bool:
    """HTTP Basic with any username, as Faktory: only the password is checked."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, _, given = decoded.partition(":")
    return hmac.compare_digest(given.encode(), password.encode())


def _apply_prefix(scope: Scope, configured: str) -> str:
    """Set the reverse-proxy prefix (``X-Script-Name`` wins over the configured one) as the
    ASGI ``root_path`` and return it.

    ASGI's ``path`` includes ``root_path``; a proxy that strips the prefix before forwarding
    leaves it out, so it is put back and routing (which removes ``root_path``) works for both.
    """
    headers = Headers(scope=scope)
    prefix = (headers.get("x-script-name") or configured or scope.get("root_path", "")).rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    path: str = scope["path"]
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        scope["path"] = prefix + path
    scope["root_path"] = prefix
    return prefix


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class SecurityMiddleware:
    """Prefix handling, Basic auth, read-only refusal, origin checks and response headers."""

    def __init__(
        self, app: ASGIApp, *, password: str | None, read_only: bool, root_path: str
    ) -> None:
        self.app = app
        self.password = password or None
        self.read_only = read_only
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        prefix = _apply_prefix(scope, self.root_path)
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        # Routing rewrites scope["root_path"] (Mount), so decide this before it runs.
        is_static = _route_path(scope).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    out.raw.append((name, value))
                if is_static:
                    # Asset URLs carry the version (?v=), so an hour of caching is safe.
                    out["cache-control"] = "public, max-age=3600"
                nonce = scope.get("conveyor.csrf_new")
                if nonce:
                    out.append("set-cookie", _cookie(nonce, prefix or "/", scope))
            await send(message)

        if refusal is not None:
            await _plain(send_with_headers, *refusal)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, Iterable[Any]] | None:
        """(status, text, extra headers) when the request must be refused before routing."""
        needs_password = self.password and _route_path(scope) not in PUBLIC_PATHS
        if needs_password and not _password_ok(headers, self.password or ""):
            challenge = [(b"www-authenticate", b'Basic realm="conveyor", charset="UTF-8"')]
            return 401, "Password required.\n", challenge
        if scope["method"] not in SAFE_METHODS:
            if self.read_only:
                return 403, "This dashboard is read-only.\n", ()
            if _is_cross_origin(headers):
                return 403, "Cross-origin request refused (CSRF protection).\n", ()
        return None


def _cookie(nonce: str, path: str, scope: Scope) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[CSRF_COOKIE] = nonce
    morsel = cookie[CSRF_COOKIE]
    morsel["path"] = path
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    if scope.get("scheme") == "https":
        morsel["secure"] = True
    return morsel.OutputString()


async def _plain(send: Any, status: int, text: str, extra: Iterable[Any]) -> None:
    body = text.encode()
    response_headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
