"""Who may act through the screens, and from where.

- Viewing needs nothing: the kitchen display and the operator page are read by anyone on the
  LAN (they show no phone number and no e-mail address).
- Every action (a POST: bump, recall, reprint, retry, accept, reject, 86, store) needs the
  operator token of `http.operator_token_file`: as `Authorization: Bearer {token}` (tools,
  scripts), or through a session cookie that the login form sets once the token was typed
  in. The cookie does not hold the token: it holds when it was issued, a random id, and an
  HMAC of both keyed with the token, so it proves the token was known, survives a daemon
  restart, and dies with the token when the token file is changed. It is HttpOnly and
  SameSite=Strict, and lasts `SESSION_HOURS`.
- Cross-site requests are refused, on every POST, before anything else: the `Origin` header
  (or, without one, the `Referer`) must be this very server, and `Sec-Fetch-Site`, when the
  browser sends it, must say same-origin. A POST made with the session cookie must also
  carry the session's CSRF token (the `X-CSRF-Token` header from the page's script, or the
  `csrf` field of a form), which only a page of this server can read.
- Tokens are compared in constant time. A wrong token at the login form costs a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edge.config.secrets import MIN_TOKEN_LENGTH, TokenFile

log = structlog.get_logger(__name__)

SESSION_COOKIE = "kitchen_edge_operator"
SESSION_HOURS = 16.0            # a long kitchen shift
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
WRONG_TOKEN_DELAY = 1.0
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POSTs that need no operator: the login form itself (it is still same-origin only).
OPEN_POSTS = frozenset({"/login"})

class OperatorToken:
    """The operator token file, read again whenever it changes (rotate it without a restart),
    with the rules of every secret file (edge.config.secrets) and the daemon's own token shape."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file = (TokenFile(path, "operator_token", min_length=MIN_TOKEN_LENGTH)
                      if path is not None else None)

    @property
    def problem(self) -> str | None:
        if self._file is None:
            return "http.operator_token_file is not set"
        return self._file.problem

    def get(self) -> str | None:
        return self._file.get() if self._file is not None else None

    def matches(self, presented: str) -> bool:
        token = self.get()
        return token is not None and hmac.compare_digest(
            presented.encode("utf-8"), token.encode("utf-8"))


def _mac(token: str, *parts: str) -> str:
    return hmac.new(token.encode("utf-8"), "|".join(parts).encode("utf-8"),
                    hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    nonce: str
    csrf: str


class Guard:
    """The security checks of the screens' HTTP server (see the module docstring)."""

    def __init__(self, token: OperatorToken, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.token = token
        self._wall = wall

    # -- sessions ------------------------------------------------------------------------

    def new_cookie(self) -> str:
        token = self.token.get()
        if token is None:
            raise RuntimeError("no operator token")
        issued, nonce = str(int(self._wall())), secrets.token_hex(16)
        return f"{issued}.{nonce}.{_mac(token, 'session', issued, nonce)}"

    def session(self, request: web.Request) -> Session | None:
        """The request's valid session, if it has one."""
        value = request.cookies.get(SESSION_COOKIE)
        token = self.token.get()
        if not value or token is None:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        issued, nonce, mac = parts
        if not hmac.compare_digest(mac, _mac(token, "session", issued, nonce)):
            return None
        age = self._wall() - int(issued)
        if not -300 <= age <= SESSION_HOURS * 3600:
            return None
        return Session(nonce, _mac(token, "csrf", nonce)[:32])

    def set_cookie(self, response: web.StreamResponse) -> None:
        response.set_cookie(SESSION_COOKIE, self.new_cookie(), httponly=True,
                            samesite="Strict", path="/", max_age=int(SESSION_HOURS * 3600))

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/")

    # -- checks --------------------------------------------------------------------------

    @staticmethod
    def same_origin(request: web.Request) -> str | None:
        """None when the request comes from a page of this server; else why not."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        expected = f"{request.scheme}://{request.host}".lower()
        origin = request.headers.get("Origin")
        if origin is not None:
            if origin.lower().rstrip("/") != expected:
                return f"cross-site request refused (Origin {origin} is not {expected})"
            return None
        referer = request.headers.get("Referer")
        if referer is not None:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}".lower() != expected:
                return "cross-site request refused (Referer is another site)"
        # Neither header: not a browser (browsers send Origin with every POST); a tool
        # still needs the token, and has no cookie to abuse.
        return None

    def authorize(self, request: web.Request, form_csrf: str | None) -> str:
        """How the request proves it may act ("bearer" or "session"); raises the 401 or
        403 that says why not."""
        token = self.token.get()
        if token is None:
            raise _error(web.HTTPForbidden, f"actions are off: {self.token.problem}")
        auth = request.headers.get("Authorization", "")
        if auth:
            scheme, _, presented = auth.partition(" ")
            if scheme.lower() != "bearer" or not self.token.matches(presented.strip()):
                raise _error(web.HTTPUnauthorized, "wrong operator token",
                             headers={"WWW-Authenticate": 'Bearer realm="kitchen-edge"'})
            return "bearer"
        session = self.session(request)
        if session is None:
            raise _error(web.HTTPUnauthorized,
                         "the operator token is needed: log in at /login "
                         "(or send Authorization: Bearer)",
                         headers={"WWW-Authenticate": 'Bearer realm="kitchen-edge"'})
        presented = request.headers.get(CSRF_HEADER) or form_csrf or ""
        if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
            raise _error(web.HTTPForbidden,
                         "CSRF token missing or wrong: reload the page and try again")
        return "session"

    def middleware(self) -> Middleware:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method not in UNSAFE:
                return await handler(request)
            why = self.same_origin(request)
            if why is not None:
                log.warning("screens_request_refused", path=request.path, why=why)
                raise _error(web.HTTPForbidden, why)
            if request.path in OPEN_POSTS:
                return await handler(request)
            form_csrf: str | None = None
            if request.content_type in ("application/x-www-form-urlencoded",
                                        "multipart/form-data"):
                form = await request.post()
                value = form.get(CSRF_FIELD)
                form_csrf = value if isinstance(value, str) else None
            try:
                self.authorize(request, form_csrf)
            except web.HTTPException as exc:
                log.warning("screens_action_refused", path=request.path, status=exc.status,
                            why=exc.text)
                raise
            return await handler(request)

        return guard

    async def wrong_token_pause(self) -> None:
        await asyncio.sleep(WRONG_TOKEN_DELAY)


def _error(cls: type[web.HTTPException], message: str,
           headers: dict[str, str] | None = None) -> web.HTTPException:
    return cls(text=message + "\n", content_type="text/plain", headers=headers)


def safe_next(value: str | None) -> str:
    """Where the login form may send the browser back to: a path of this server only."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Guard",
    "OperatorToken",
    "Session",
    "safe_next",
]
