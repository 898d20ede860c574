"""Where the server is: a ``tcp://`` / ``tcp+tls://`` URL, resolved the way Faktory clients do.

Order of precedence, first hit wins:

1. the URL passed in code;
2. ``CONVEYOR_URL``;
3. ``FAKTORY_PROVIDER`` names another variable that holds the URL (Heroku-style add-ons), e.g.
   ``FAKTORY_PROVIDER=FAKTORYTOGO_URL``; it must be a name, so a value with ``:`` is an error;
4. ``FAKTORY_URL``;
5. ``tcp://localhost:7419``.

The password comes from the URL (``tcp://:secret@host:7419``), else ``FAKTORY_PASSWORD``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_PORT", "DEFAULT_URL", "ServerAddress", "resolve_url"]

DEFAULT_PORT = 7419
DEFAULT_URL = f"tcp://localhost:{DEFAULT_PORT}"
_SCHEMES = {"tcp": False, "tcp+tls": True}


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """A parsed server URL. ``username`` is sent in HELLO only so TCP proxies can route."""

    host: str
    port: int
    tls: bool = False
    password: str | None = None
    username: str | None = None

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log)."""
        scheme = "tcp+tls" if self.tls else "tcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def resolve_url(url: str | None = None, environ: Mapping[str, str] | None = None) -> ServerAddress:
    """Parse ``url``, or find one in the environment (see the module docstring).

    Raises ``ValueError`` with the offending value for anything that is not a server URL.
    """
    env = os.environ if environ is None else environ
    if not url:
        url = env.get("CONVEYOR_URL") or _faktory_url(env)
    address = parse_url(url)
    if address.password is None and env.get("FAKTORY_PASSWORD"):
        return ServerAddress(
            address.host, address.port, address.tls, env["FAKTORY_PASSWORD"], address.username
        )
    return address


def _faktory_url(env: Mapping[str, str]) -> str:
    provider = env.get("FAKTORY_PROVIDER")
    if provider:
        if ":" in provider:
            raise ValueError(
                f"FAKTORY_PROVIDER={provider!r} must be the NAME of the environment variable "
                "that holds the URL (e.g. FAKTORY_PROVIDER=MY_FAKTORY_URL), not the URL itself"
            )
        return env.get(provider) or DEFAULT_URL
    return env.get("FAKTORY_URL") or DEFAULT_URL


def parse_url(url: str) -> ServerAddress:
    """Parse ``tcp://[user][:password@]host[:port]`` or ``tcp+tls://...``."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"unsupported server URL {url!r}: the scheme must be tcp:// or tcp+tls://")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"invalid port in server URL {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"server URL {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"server URL {url!r} must not have a path, query or fragment")
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    return ServerAddress(parts.hostname, port, _SCHEMES[parts.scheme], password, username)
