"""Who may read the pages: loopback in development, else a session from a token login.

The session lives in a signed cookie (Starlette's SessionMiddleware: HttpOnly, SameSite
Strict, Secure outside development) and carries the authority and a role, so an office
role can be added without changing the cookie. Every form carries the session's CSRF token.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any

from fastapi import Request

ROLE_AUTHORITY = "authority"
"""A token of the token store: an authority's. Office tokens will be another role."""
CSRF_FIELD = "csrf_token"
LOOPBACK_HOSTS = {"localhost"}


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    session: dict[str, Any] = request.session
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request: Request, sent: str | None) -> bool:
    """Whether a form's token is the session's (compared in constant time)."""
    expected = request.session.get("csrf")
    return (
        isinstance(expected, str)
        and isinstance(sent, str)
        and hmac.compare_digest(expected.encode(), sent.encode())
    )


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def signed_in(request: Request) -> str | None:
    """The authority of the session's login, if any."""
    authority = request.session.get("authority")
    return authority if isinstance(authority, str) else None


def may_read(request: Request, development: bool) -> bool:
    """Read pages: open to loopback clients in development, else a login is needed."""
    return signed_in(request) is not None or (development and is_loopback(request))


def sign_in(request: Request, authority: str, role: str = ROLE_AUTHORITY) -> None:
    """A new session for ``authority``: fresh CSRF token, nothing of the old one kept."""
    request.session.clear()
    request.session.update(
        {"authority": authority, "role": role, "csrf": secrets.token_urlsafe(32)}
    )


def sign_out(request: Request) -> None:
    request.session.clear()
    csrf_token(request)


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path on this site only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
