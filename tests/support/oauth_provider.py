"""A real OAuth 2.0 authorization server for tests: HTTP on 127.0.0.1, in a background thread.

The vault's token client is tested against this server rather than against mocks of
httpx, so every request really crosses a socket: client authentication, encodings,
status codes, oversized and withheld answers behave as they would with a provider.
Because it listens on a real port, vault subprocesses can call it as well.

It implements the authorization-code grant (RFC 6749 §4.1: an authorization endpoint
that checks the client and its exactly registered redirect URI, round-trips ``state``,
records a PKCE S256 challenge, issues single-use codes bound to all three, and can
answer "deny"), the refresh_token grant (RFC 6749 §6) with refresh-token rotation,
RFC 7009 revocation, and the dialects of the providers that answer differently:
Slack (HTTP 200 with ``"ok": false``; a code answer with ``team`` and a nested
``authed_user``), GitHub (HTTP 200 with ``error``; form encoding unless JSON is asked
for; grant deletion), Microsoft and Google (a code answer with an ``id_token`` carrying
tid/oid or sub/hd) and Dropbox (Bearer revocation).

Tokens are canaries (tests/support/canaries.py): the session's log scan then proves that none
of them was ever logged. Error answers echo the presented token and client secret in
``error_description``, as careless providers do, so a client that copies provider text
into its messages is caught by the tests.

Timing is never simulated with sleeps: ``hold_next`` withholds an answer until the test
releases or drops it, and the held request is fully processed (a refresh token rotated)
before ``Hold.reached`` is set.

Run from a clone, it is a provider to try the vault's OAuth features with (docs/oauth.md,
"Try it on your machine")::

    python -m tests.support.oauth_provider [--expires-in SECONDS] [--port PORT] [--no-rotation]
                                   [--redirect-uri URI ...]

It registers one client, issues one grant, prints the token endpoint, the client id and
secret and the grant's refresh token as shell assignments on standard output, and serves
until Ctrl-C (or SIGTERM). Printing them is its purpose: they are made-up values that
only this process, on loopback, accepts, and they are forgotten when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit

from tests.support import canaries

# A held answer that nobody releases is dropped after this long, so that a broken
# test cannot hang the server (or the run) forever.
HOLD_LIMIT_S = 60.0
# Requests larger than this are refused: no legitimate token request comes close.
_MAX_REQUEST_BYTES = 1024 * 1024
_SECRET_PARAMS = frozenset(
    {"refresh_token", "client_secret", "token", "access_token", "code", "code_verifier"}
)
REDACTED = "<redacted>"

Endpoint = Literal["token", "revoke"]
Dialect = Literal["standard", "slack", "github", "dropbox", "microsoft", "google"]

_TOKEN_PATHS: Mapping[str, Dialect] = {
    "/token": "standard",
    "/slack/oauth.v2.access": "slack",
    "/github/login/oauth/access_token": "github",
    "/microsoft/token": "microsoft",
    "/google/token": "google",
}
_AUTHORIZE_PATHS: Mapping[str, Dialect] = {
    "/authorize": "standard",
    "/slack/oauth/v2/authorize": "slack",
    "/github/login/oauth/authorize": "github",
    "/microsoft/authorize": "microsoft",
    "/google/authorize": "google",
}
# The id_tokens it issues are HS256-signed with this made-up key: the vault does not
# verify them (see providers/code_exchange.py), so the key only makes them look real.
ID_TOKEN_KEY = b"fake-oauth-provider-id-token-key"
_PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_REVOKE_PATHS: Mapping[str, Dialect] = {
    "/revoke": "standard",
    "/slack/auth.revoke": "slack",
    "/dropbox/2/auth/token/revoke": "dropbox",
}
_GITHUB_GRANT_PREFIX = "/github/applications/"
_GITHUB_GRANT_SUFFIX = "/grant"

# How each dialect spells the standard error codes.
_SLACK_CODES = {
    "invalid_grant": "invalid_refresh_token",
    "invalid_request": "invalid_arguments",
    "unsupported_grant_type": "invalid_grant_type",
}
_GITHUB_CODES = {
    "invalid_grant": "bad_refresh_token",
    "invalid_client": "incorrect_client_credentials",
}


@dataclass(frozen=True)
class RecordedRequest:
    """What a request looked like on the wire, minus its secrets."""

    method: str
    path: str
    # Lower-case names; Authorization keeps only its scheme ("Basic", "Bearer").
    headers: Mapping[str, str]
    # Body parameter names in order, and their values with secret ones redacted.
    form_keys: tuple[str, ...]
    params: Mapping[str, str]
    content_type: str
    # "basic", "post" or "none": how the client authenticated.
    client_auth: str


class Hold:
    """One withheld answer; see the module docstring."""

    def __init__(self, *, after_headers: bool = False) -> None:
        self.reached = threading.Event()
        self.after_headers = after_headers
        self._decided = threading.Event()
        self._drop = False

    def release(self) -> None:
        """Let the held request be answered."""
        self._decided.set()

    def drop(self) -> None:
        """Close the held request's connection without answering."""
        self._drop = True
        self._decided.set()

    def wait_reached(self, timeout: float = 10.0) -> bool:
        """Block until the held request has arrived and been processed."""
        return self.reached.wait(timeout)

    async def wait_reached_async(self, limit_s: float = 10.0) -> bool:
        """wait_reached without blocking the event loop the client under test runs on."""
        return await asyncio.to_thread(self.reached.wait, limit_s)

    def _await_decision(self) -> bool:
        """Server side: True to answer, False to drop (also after HOLD_LIMIT_S)."""
        return self._decided.wait(HOLD_LIMIT_S) and not self._drop


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    # Stream this many filler bytes after body, with no Content-Length.
    filler: int = 0


@dataclass
class _Grant:
    client_id: str
    expires_in: int
    rotate: bool
    scopes: tuple[str, ...]
    refresh_token: str
    access_tokens: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Code:
    """An issued authorization code and everything it is bound to."""

    client_id: str
    redirect_uri: str
    # The S256 challenge from the authorization request; None when none was sent.
    challenge: str | None
    scopes: tuple[str, ...]
    user_scopes: tuple[str, ...]


@dataclass(frozen=True)
class Identity:
    """Who the fake user is, as the code answers report it (see set_identity)."""

    workspace_id: str | None = "T-fake-workspace"
    user_id: str | None = "U-fake-user"


@dataclass(frozen=True)
class CodeGrantShape:
    """How the next code exchanges answer (see shape_code_grants)."""

    # None: the answer carries no expires_in (the issued grant still lives 3600 s).
    expires_in: int | None = 3600
    issue_refresh_token: bool = True
    rotate: bool = True
    # None: grant what was asked for.
    granted_scopes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _Incoming:
    method: str
    path: str
    headers: Mapping[str, str]
    params: Mapping[str, str]
    duplicate_params: bool
    content_type: str
    # The URL's query (the authorization endpoint's parameters).
    query: Mapping[str, str] = field(default_factory=dict)
    duplicate_query: bool = False


def _json(status: int, document: object, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(document).encode(), headers=headers or {})


class FakeOAuthProvider:
    """The server; usable as ``with FakeOAuthProvider() as provider:``."""

    def __init__(self, *, port: int = 0) -> None:
        self._lock = threading.Lock()
        # Notified on every token request (wait_for_token_calls).
        self._called = threading.Condition(self._lock)
        self._clients: dict[str, str] = {}
        self._redirect_uris: dict[str, set[str]] = {}
        self._codes: dict[str, _Code] = {}
        self._denials: collections.deque[str] = collections.deque()
        self._identity = Identity()
        self._code_shape = CodeGrantShape()
        self._authorize_calls = 0
        self._last_authorization: Mapping[str, str] | None = None
        self._grants: list[_Grant] = []
        self._by_refresh: dict[str, _Grant] = {}
        self._by_access: dict[str, _Grant] = {}
        self._revoked: list[str] = []
        self._scripted: collections.deque[_Reply] = collections.deque()
        self._holds: dict[Endpoint, collections.deque[Hold]] = {
            "token": collections.deque(),
            "revoke": collections.deque(),
        }
        self._waiting: list[Hold] = []
        self._revocation_failure: int | None = None
        self._token_calls = 0
        self._revoke_calls = 0
        self._last_token_request: RecordedRequest | None = None
        self._last_revoke_request: RecordedRequest | None = None
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._server.provider = self  # type: ignore[attr-defined]  # read by _Handler
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.token_url = self.url + "/token"
        self.revocation_url = self.url + "/revoke"
        self.slack_token_url = self.url + "/slack/oauth.v2.access"
        self.slack_revocation_url = self.url + "/slack/auth.revoke"
        self.github_token_url = self.url + "/github/login/oauth/access_token"
        # Keeps GitHub's "{client_id}" placeholder, as the catalogue's URL does.
        self.github_revocation_url = self.url + "/github/applications/{client_id}/grant"
        self.dropbox_revocation_url = self.url + "/dropbox/2/auth/token/revoke"
        self.authorization_url = self.url + "/authorize"
        self.slack_authorization_url = self.url + "/slack/oauth/v2/authorize"
        self.github_authorization_url = self.url + "/github/login/oauth/authorize"
        self.microsoft_authorization_url = self.url + "/microsoft/authorize"
        self.microsoft_token_url = self.url + "/microsoft/token"
        self.google_authorization_url = self.url + "/google/authorize"
        self.google_token_url = self.url + "/google/token"
        # A short poll interval only makes close() prompt; nothing waits on it.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-oauth-provider",
            daemon=True,
        )
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeOAuthProvider:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; held requests are dropped so their threads finish."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            holds = [*self._waiting, *self._holds["token"], *self._holds["revoke"]]
        for hold in holds:
            hold.drop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------- test set-up

    def register_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._clients[client_id] = client_secret

    def register_redirect_uri(self, client_id: str, redirect_uri: str) -> None:
        """Allow redirect_uri (matched exactly) on client_id's authorization requests."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError("register the client before its redirect URIs")
            self._redirect_uris.setdefault(client_id, set()).add(redirect_uri)

    def deny_next_authorization(self, error: str = "access_denied") -> None:
        """The next valid authorization request redirects back with this error (the
        user pressed "Deny"), and no code."""
        with self._lock:
            self._denials.append(error)

    def set_identity(self, *, workspace_id: str | None, user_id: str | None) -> None:
        """The workspace and user that code answers report from now on (None: omitted).

        Slack: team.id and authed_user.id; Microsoft: the id_token's tid and oid;
        Google: its hd and sub.
        """
        with self._lock:
            self._identity = Identity(workspace_id, user_id)

    def shape_code_grants(
        self,
        *,
        expires_in: int | None = 3600,
        issue_refresh_token: bool = True,
        rotate: bool = True,
        granted_scopes: tuple[str, ...] | None = None,
    ) -> None:
        """How code exchanges answer from now on; see CodeGrantShape."""
        with self._lock:
            self._code_shape = CodeGrantShape(
                expires_in, issue_refresh_token, rotate, granted_scopes
            )

    def issue_grant(
        self,
        client_id: str,
        *,
        expires_in: int = 3600,
        rotate: bool = True,
        scopes: tuple[str, ...] = (),
    ) -> tuple[str, str]:
        """A new authorization for client_id: returns (access_token, refresh_token)."""
        access_token, refresh_token = canaries.canary("at"), canaries.canary("rt")
        grant = _Grant(client_id, expires_in, rotate, scopes, refresh_token, {access_token})
        with self._lock:
            if client_id not in self._clients:
                raise KeyError("register the client before issuing grants to it")
            self._grants.append(grant)
            self._by_refresh[refresh_token] = grant
            self._by_access[access_token] = grant
        return access_token, refresh_token

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        error: str | None = None,
        retry_after: int | str | None = None,
    ) -> None:
        """The next n token requests fail this way, before any processing.

        With status 200 the failure is spoken in the endpoint's dialect (Slack's
        ``ok: false``, GitHub's ``error``); without an error code the body is not JSON.
        """
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        if error is None:
            reply = _Reply(status, b"<html>scripted failure</html>", "text/html", headers)
        else:
            document = {"error": error, "error_description": "scripted failure"}
            reply = _json(status, document, headers)
        self._script(n, reply)

    def answer_next_raw(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next token request gets exactly this answer."""
        self._script(1, _Reply(status, body, content_type, dict(headers or {})))

    def oversize_next(self, size: int = 1024 * 1024) -> None:
        """The next token request gets a 200 whose body is `size` bytes, undeclared."""
        self._script(1, _Reply(200, b'{"access_token": "x", "pad": "', filler=size))

    def redirect_next(self, status: int = 302, location: str = "") -> None:
        """The next token request is redirected (to a path that would succeed, if followed)."""
        headers = {"Location": location or self.token_url}
        self._script(1, _Reply(status, b"", "text/plain", headers))

    def _script(self, n: int, reply: _Reply) -> None:
        with self._lock:
            self._scripted.extend([reply] * n)

    def hold_next(self, *, on: Endpoint = "token", after_headers: bool = False) -> Hold:
        """Withhold the answer to the next request on `on` until the Hold says.

        after_headers: send the status line, the headers and half the body first, and
        withhold the rest (a provider that stalls mid-answer).
        """
        hold = Hold(after_headers=after_headers)
        with self._lock:
            self._holds[on].append(hold)
        return hold

    def fail_revocations(self, status: int | None) -> None:
        """Every revocation answers `status` from now on (None: back to normal)."""
        with self._lock:
            self._revocation_failure = status

    # ---------------------------------------------------------------- observation

    @property
    def token_calls(self) -> int:
        with self._lock:
            return self._token_calls

    def wait_for_token_calls(self, count: int, timeout: float = 30.0) -> bool:
        """Block until at least count token requests have arrived; False on timeout."""
        with self._called:
            return self._called.wait_for(lambda: self._token_calls >= count, timeout)

    async def wait_for_token_calls_async(self, count: int, limit_s: float = 30.0) -> bool:
        return await asyncio.to_thread(self.wait_for_token_calls, count, limit_s)

    @property
    def authorize_calls(self) -> int:
        with self._lock:
            return self._authorize_calls

    @property
    def last_authorization(self) -> Mapping[str, str] | None:
        """The last authorization request's query parameters (none of them secret)."""
        with self._lock:
            return self._last_authorization

    @property
    def outstanding_codes(self) -> int:
        """Codes issued and not yet presented."""
        with self._lock:
            return len(self._codes)

    @property
    def revoke_calls(self) -> int:
        with self._lock:
            return self._revoke_calls

    @property
    def last_token_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._last_token_request

    @property
    def last_revoke_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._last_revoke_request

    @property
    def revoked(self) -> list[str]:
        with self._lock:
            return list(self._revoked)

    def is_refresh_token_valid(self, refresh_token: str) -> bool:
        with self._lock:
            return refresh_token in self._by_refresh

    def is_access_token_valid(self, access_token: str) -> bool:
        with self._lock:
            return access_token in self._by_access

    # -------------------------------------------------------------------- serving

    def _handle(self, handler: _Handler) -> None:
        incoming = _read_request(handler)
        if incoming.path in _AUTHORIZE_PATHS:
            with self._lock:
                reply = self._authorize(_AUTHORIZE_PATHS[incoming.path], incoming)
            _write_reply(handler, reply)
            return
        endpoint, dialect = _route(incoming)
        with self._lock:
            hold = self._count_and_take_hold(endpoint, incoming)
            reply = self._answer(endpoint, dialect, incoming)
            if hold is not None:
                self._waiting.append(hold)
        if hold is None:
            _write_reply(handler, reply)
            return
        # With after_headers, the status line, headers and half the body go out first,
        # so the client is left waiting in the middle of reading the body.
        cut = len(reply.body) // 2 if hold.after_headers else 0
        if hold.after_headers:
            _write_reply(handler, replace(reply, body=reply.body[:cut], filler=0), reply.body)
        hold.reached.set()
        answer = hold._await_decision()
        with self._lock:
            self._waiting.remove(hold)
        if not answer:
            handler.close_connection = True
        elif hold.after_headers:
            with contextlib.suppress(OSError):
                handler.wfile.write(reply.body[cut:])
        else:
            _write_reply(handler, reply)

    def _count_and_take_hold(self, endpoint: Endpoint | None, incoming: _Incoming) -> Hold | None:
        if endpoint is None:
            return None
        recorded = _record(incoming)
        if endpoint == "token":
            self._token_calls += 1
            self._last_token_request = recorded
            self._called.notify_all()
        else:
            self._revoke_calls += 1
            self._last_revoke_request = recorded
        holds = self._holds[endpoint]
        return holds.popleft() if holds else None

    def _answer(self, endpoint: Endpoint | None, dialect: Dialect, incoming: _Incoming) -> _Reply:
        if endpoint == "token":
            if self._scripted:
                return self._in_dialect(self._scripted.popleft(), dialect)
            return self._token(dialect, incoming)
        if endpoint == "revoke":
            if self._revocation_failure is not None:
                body = {"error": "temporarily_unavailable"}
                return _json(self._revocation_failure, body)
            return self._revoke(dialect, incoming)
        return _json(404, {"error": "not_found"})

    @staticmethod
    def _in_dialect(reply: _Reply, dialect: Dialect) -> _Reply:
        """A scripted 200 failure, spoken as Slack would."""
        if dialect != "slack" or reply.status != 200 or not reply.body.startswith(b"{"):
            return reply
        document = json.loads(reply.body)
        if "error" not in document:
            return reply
        return _json(200, {"ok": False, "error": document["error"]}, reply.headers)

    # ----------------------------------------------------------- token endpoints

    def _authenticate(self, incoming: _Incoming) -> tuple[str | None, str]:
        """(client_id or None when authentication failed, error code or "")."""
        basic = _basic_credentials(incoming.headers.get("authorization", ""))
        posted = incoming.params.get("client_secret")
        if basic is not None and posted is not None:
            return None, "invalid_request"  # RFC 6749 §2.3: one method only
        if basic is None and posted is None:
            return None, "invalid_client"
        client_id, secret = basic or (incoming.params.get("client_id", ""), posted or "")
        if self._clients.get(client_id) != secret:
            return None, "invalid_client"
        return client_id, ""

    def _token(self, dialect: Dialect, incoming: _Incoming) -> _Reply:
        grant_type = incoming.params.get("grant_type")
        presented = incoming.params.get(
            "code" if grant_type == "authorization_code" else "refresh_token", ""
        )
        if incoming.method != "POST":
            return _json(405, {"error": "invalid_request"})
        client_id, error = self._authenticate(incoming)
        if client_id is None:
            return self._token_error(dialect, incoming, error, presented)
        if incoming.duplicate_params or not presented:
            return self._token_error(dialect, incoming, "invalid_request", presented)
        if grant_type == "authorization_code":
            return self._redeem_code(dialect, incoming, client_id, presented)
        if grant_type != "refresh_token":
            return self._token_error(dialect, incoming, "unsupported_grant_type", presented)
        return self._refresh(dialect, incoming, client_id, presented)

    def _refresh(
        self, dialect: Dialect, incoming: _Incoming, client_id: str, presented: str
    ) -> _Reply:
        grant = self._by_refresh.get(presented)
        if grant is None or grant.client_id != client_id:
            return self._token_error(dialect, incoming, "invalid_grant", presented)
        access_token = canaries.canary("at")
        grant.access_tokens.add(access_token)
        self._by_access[access_token] = grant
        document: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": grant.expires_in,
        }
        if grant.rotate:
            del self._by_refresh[presented]
            grant.refresh_token = canaries.canary("rt")
            self._by_refresh[grant.refresh_token] = grant
            document["refresh_token"] = grant.refresh_token
        if grant.scopes:
            separator = "," if dialect == "slack" else " "
            document["scope"] = separator.join(grant.scopes)
        if dialect == "slack":
            document = {"ok": True, **document, "token_type": "bot"}
        return self._token_success(dialect, incoming, document)

    # ------------------------------------------------- authorization-code grant

    def _authorize(self, dialect: Dialect, incoming: _Incoming) -> _Reply:
        """RFC 6749 §4.1.1-4.1.2: redirect back with a code (or an error), or, when the
        client or redirect URI is not right, refuse without redirecting (§4.1.2.1)."""
        self._authorize_calls += 1
        query = incoming.query
        self._last_authorization = dict(query)
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if incoming.method != "GET" or incoming.duplicate_query:
            return _json(400, {"error": "invalid_request"})
        if client_id not in self._clients:
            return _json(400, {"error": "invalid_client"})
        if redirect_uri not in self._redirect_uris.get(client_id, set()):
            return _json(400, {"error": "invalid_request", "error_description": "redirect_uri"})
        state = query.get("state")
        back: dict[str, str] = {}
        challenge = query.get("code_challenge")
        method = query.get("code_challenge_method")
        if query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        elif challenge is not None and (
            method != "S256" or not _PKCE_CHALLENGE.fullmatch(challenge)
        ):
            back["error"] = "invalid_request"  # only S256 is accepted, as GitHub does
        elif self._denials:
            back["error"] = self._denials.popleft()
        else:
            code = canaries.canary("code")
            separator = "," if dialect == "slack" else " "
            self._codes[code] = _Code(
                client_id=client_id,
                redirect_uri=redirect_uri,
                challenge=challenge,
                scopes=_split(query.get("scope", ""), separator),
                user_scopes=_split(query.get("user_scope", ""), ","),
            )
            back["code"] = code
        if state is not None:
            back["state"] = state
        joiner = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + joiner + urlencode(back)
        return _Reply(302, b"", "text/plain", {"Location": location})

    def _redeem_code(
        self, dialect: Dialect, incoming: _Incoming, client_id: str, presented: str
    ) -> _Reply:
        """RFC 6749 §4.1.3 with RFC 7636 §4.6: a code is good once, for its own client,
        with its own redirect_uri and the verifier of its challenge (none if none)."""
        code = self._codes.pop(presented, None)  # single use: spent even when refused
        verifier = incoming.params.get("code_verifier")
        if (
            code is None
            or code.client_id != client_id
            or incoming.params.get("redirect_uri") != code.redirect_uri
            or not _verifier_matches(code.challenge, verifier)
        ):
            return self._token_error(dialect, incoming, "invalid_grant", presented)
        shape = self._code_shape
        granted = code.scopes if shape.granted_scopes is None else shape.granted_scopes
        access_token = canaries.canary("at")
        refresh_token = canaries.canary("rt")
        grant = _Grant(
            client_id,
            shape.expires_in or 3600,
            shape.rotate,
            granted,
            refresh_token,
            {access_token},
        )
        self._grants.append(grant)
        self._by_access[access_token] = grant
        document: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer"}
        if shape.issue_refresh_token:
            self._by_refresh[refresh_token] = grant
            document["refresh_token"] = refresh_token
        if shape.expires_in is not None:
            document["expires_in"] = shape.expires_in
        if granted:
            document["scope"] = ("," if dialect == "slack" else " ").join(granted)
        identity = self._identity
        if dialect == "slack":
            authed_user: dict[str, Any] = {"scope": ",".join(code.user_scopes)}
            if identity.user_id is not None:
                authed_user["id"] = identity.user_id
            document = {"ok": True, **document, "token_type": "bot", "authed_user": authed_user}
            if identity.workspace_id is not None:
                document["team"] = {"id": identity.workspace_id, "name": "Fake Workspace"}
        elif dialect in ("microsoft", "google"):
            document["id_token"] = _id_token(dialect, client_id, identity)
        return self._token_success(dialect, incoming, document)

    def _token_success(
        self, dialect: Dialect, incoming: _Incoming, document: Mapping[str, Any]
    ) -> _Reply:
        if dialect == "github" and "application/json" not in incoming.headers.get("accept", ""):
            form = urlencode({k: str(v) for k, v in document.items()}).encode()
            return _Reply(200, form, "application/x-www-form-urlencoded")
        return _json(200, document)

    def _token_error(
        self, dialect: Dialect, incoming: _Incoming, code: str, presented: str
    ) -> _Reply:
        # Careless providers echo what they were sent; the client must not copy it.
        secret = incoming.params.get("client_secret", "")
        description = f"refresh token {presented!r} (client secret {secret!r}) was rejected"
        if dialect == "slack":
            if code == "invalid_client":
                known = incoming.params.get("client_id", "") in self._clients
                code = "bad_client_secret" if known else "invalid_client_id"
            return _json(200, {"ok": False, "error": _SLACK_CODES.get(code, code)})
        if dialect == "github":
            document = {"error": _GITHUB_CODES.get(code, code), "error_description": description}
            return self._token_success(dialect, incoming, document)
        status = 401 if code == "invalid_client" else 400
        headers = {"WWW-Authenticate": 'Basic realm="fake"'} if status == 401 else {}
        return _json(status, {"error": code, "error_description": description}, headers)

    # ------------------------------------------------------ revocation endpoints

    def _revoke(self, dialect: Dialect, incoming: _Incoming) -> _Reply:
        if incoming.path.startswith(_GITHUB_GRANT_PREFIX):
            return self._revoke_github_grant(incoming)
        if dialect == "dropbox":
            token = _bearer(incoming.headers.get("authorization", ""))
            if token is None or token not in self._by_access:
                body = {
                    "error_summary": "invalid_access_token/",
                    "error": {".tag": "invalid_access_token"},
                }
                return _json(401, body)
            self._end_grant(self._by_access[token], token)
            return _Reply(200, b"null")
        token = incoming.params.get("token") or _bearer(incoming.headers.get("authorization", ""))
        if dialect == "slack":
            if not token or not self._revoke_token(token):
                return _json(200, {"ok": False, "error": "invalid_auth"})
            return _json(200, {"ok": True, "revoked": True})
        has_credentials = "authorization" in incoming.headers or "client_secret" in incoming.params
        if has_credentials and self._authenticate(incoming)[0] is None:
            return _json(401, {"error": "invalid_client"})
        if not token:
            return _json(400, {"error": "invalid_request"})
        self._revoke_token(token)
        return _Reply(200)  # RFC 7009 §2.2: 200 whether or not the token was valid

    def _revoke_github_grant(self, incoming: _Incoming) -> _Reply:
        path_client = unquote(incoming.path[len(_GITHUB_GRANT_PREFIX) : -len(_GITHUB_GRANT_SUFFIX)])
        credentials = _raw_basic_credentials(incoming.headers.get("authorization", ""))
        if incoming.method != "DELETE":
            return _json(404, {"message": "Not Found"})
        if credentials is None or self._clients.get(credentials[0]) != credentials[1]:
            return _json(401, {"message": "Bad credentials"})
        token = incoming.params.get("access_token", "")
        grant = self._by_access.get(token)
        if credentials[0] != path_client or grant is None or grant.client_id != path_client:
            return _json(404, {"message": "Not Found"})
        self._end_grant(grant, token)
        return _Reply(204)

    def _revoke_token(self, token: str) -> bool:
        """Revoke one token (a refresh token ends its whole grant); False if unknown."""
        grant = self._by_refresh.get(token)
        if grant is not None:
            self._end_grant(grant, token)
            return True
        grant = self._by_access.pop(token, None)
        if grant is None:
            return False
        grant.access_tokens.discard(token)
        self._revoked.append(token)
        return True

    def _end_grant(self, grant: _Grant, presented: str) -> None:
        self._by_refresh.pop(grant.refresh_token, None)
        for access_token in grant.access_tokens:
            self._by_access.pop(access_token, None)
        grant.access_tokens.clear()
        self._revoked.append(presented)


# ------------------------------------------------------------------ HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a dropped answer is a closed socket.
    protocol_version = "HTTP/1.0"
    # A client that connects and sends nothing cannot pin a thread for long.
    timeout = 30

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        provider: FakeOAuthProvider = self.server.provider  # type: ignore[attr-defined]
        provider._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the test output is not the place for request lines."""


def _read_request(handler: _Handler) -> _Incoming:
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(min(length, _MAX_REQUEST_BYTES)) if length > 0 else b""
    content_type = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
    params, duplicates = _parse_body(body, content_type)
    target = urlsplit(handler.path)
    pairs = parse_qsl(target.query, keep_blank_values=True)
    query = dict(pairs)
    return _Incoming(
        method=handler.command,
        path=target.path,
        headers={name.lower(): value for name, value in handler.headers.items()},
        params=params,
        duplicate_params=duplicates,
        content_type=content_type,
        query=query,
        duplicate_query=len(query) != len(pairs),
    )


def _split(text: str, separator: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(separator) if part)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _verifier_matches(challenge: str | None, verifier: str | None) -> bool:
    """RFC 7636 §4.6; a verifier without a challenge is refused too (OAuth 2.1)."""
    if challenge is None or verifier is None:
        return challenge is None and verifier is None
    return hmac.compare_digest(_s256(verifier), challenge)


def _b64url_json(document: Mapping[str, Any]) -> str:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _id_token(dialect: Dialect, client_id: str, identity: Identity) -> str:
    """An HS256 JWT with the claims Microsoft (tid, oid) or Google (hd, sub) send."""
    now = int(time.time())
    claims: dict[str, Any] = {"aud": client_id, "iat": now, "exp": now + 3600}
    workspace, user = ("tid", "oid") if dialect == "microsoft" else ("hd", "sub")
    claims["iss"] = "https://fake-oauth-provider.invalid/" + dialect
    if identity.workspace_id is not None:
        claims[workspace] = identity.workspace_id
    if identity.user_id is not None:
        claims[user] = identity.user_id
    signing_input = _b64url_json({"alg": "HS256", "typ": "JWT"}) + "." + _b64url_json(claims)
    signature = hmac.new(ID_TOKEN_KEY, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _parse_body(body: bytes, content_type: str) -> tuple[dict[str, str], bool]:
    if not body:
        return {}, False
    if content_type == "application/json":
        try:
            document = json.loads(body)
        except ValueError:
            return {}, False
        if not isinstance(document, dict):
            return {}, False
        return {str(k): str(v) for k, v in document.items()}, False
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    params = dict(pairs)
    return params, len(params) != len(pairs)


def _route(incoming: _Incoming) -> tuple[Endpoint | None, Dialect]:
    if incoming.path in _TOKEN_PATHS:
        return "token", _TOKEN_PATHS[incoming.path]
    if incoming.path in _REVOKE_PATHS:
        return "revoke", _REVOKE_PATHS[incoming.path]
    if incoming.path.startswith(_GITHUB_GRANT_PREFIX) and incoming.path.endswith(
        _GITHUB_GRANT_SUFFIX
    ):
        return "revoke", "github"
    return None, "standard"


def _record(incoming: _Incoming) -> RecordedRequest:
    headers = dict(incoming.headers)
    if "authorization" in headers:
        headers["authorization"] = headers["authorization"].split(" ", 1)[0]
    basic = "authorization" in incoming.headers and headers["authorization"].lower() == "basic"
    client_auth = "basic" if basic else "post" if "client_secret" in incoming.params else "none"
    return RecordedRequest(
        method=incoming.method,
        path=incoming.path,
        headers=headers,
        form_keys=tuple(incoming.params),
        params={k: REDACTED if k in _SECRET_PARAMS else v for k, v in incoming.params.items()},
        content_type=incoming.content_type,
        client_auth=client_auth,
    )


def _raw_basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: Basic credentials whose parts are form-urlencoded."""
    raw = _raw_basic_credentials(header)
    return None if raw is None else (unquote_plus(raw[0]), unquote_plus(raw[1]))


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _write_reply(handler: _Handler, reply: _Reply, full_body: bytes | None = None) -> None:
    """Write the reply; Content-Length announces full_body when only part of it is sent."""
    declared = reply.body if full_body is None else full_body
    with contextlib.suppress(OSError):  # the client may have gone: that is its business
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if declared or reply.filler:
            handler.send_header("Content-Type", reply.content_type)
        if not reply.filler:
            handler.send_header("Content-Length", str(len(declared)))
        handler.end_headers()
        handler.wfile.write(reply.body)
        for chunk in _filler(reply.filler):
            handler.wfile.write(chunk)


def _filler(size: int) -> Iterator[bytes]:
    chunk = b"a" * 16384
    while size > 0:
        yield chunk[:size]
        size -= len(chunk)


# ------------------------------------------------------------- as a program of its own

# The names the program prints its values under; docs/oauth.md's walk-through uses them
# as shell variables, and tests/integration/test_oauth_walkthrough.py holds the two together.
PRINTED_NAMES = ("TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN")
DEFAULT_CLIENT_ID = "local-dev-client"


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.oauth_provider",
        description=(
            "A local OAuth 2.0 token endpoint (refresh_token grant, RFC 6749) on 127.0.0.1, "
            "to try the vault's OAuth features with. For development only: it prints the "
            "made-up client secret and refresh token it accepts."
        ),
    )
    parser.add_argument(
        "--expires-in",
        type=_positive_int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of the access tokens it issues (default: 3600)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=0,
        help="port on 127.0.0.1 (default: 0, any free port; the printed TOKEN_URL has it)",
    )
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="the client id it accepts")
    parser.add_argument(
        "--client-secret",
        default=None,
        help="the client secret it accepts (default: a new random one each run)",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help=(
            "a redirect URI that its authorization endpoint (the printed TOKEN_URL with "
            "/authorize in place of /token) accepts for the client; repeatable"
        ),
    )
    parser.add_argument(
        "--no-rotation",
        action="store_true",
        help="keep the refresh token on refresh (default: rotate it, as Slack does)",
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port from 0 to 65535")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one client and one grant until Ctrl-C or SIGTERM; see the module docstring."""
    options = argument_parser().parse_args(argv)
    secret = options.client_secret or f"local-dev-secret-{secrets.token_hex(16)}"
    stop = threading.Event()
    # Set for SIGINT too, rather than relying on KeyboardInterrupt: a process started in
    # the background of a script inherits SIGINT ignored, and Ctrl-C must still stop it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    try:
        provider = FakeOAuthProvider(port=options.port)
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{options.port}: {exc.strerror}", file=sys.stderr)
        return 1
    with provider:
        provider.register_client(options.client_id, secret)
        for redirect_uri in options.redirect_uri:
            provider.register_redirect_uri(options.client_id, redirect_uri)
        _, refresh_token = provider.issue_grant(
            options.client_id, expires_in=options.expires_in, rotate=not options.no_rotation
        )
        values = (provider.token_url, options.client_id, secret, refresh_token)
        rotation = "kept" if options.no_rotation else "rotated on every refresh"
        print(
            f"# Local OAuth provider (development only): access tokens live "
            f"{options.expires_in} s; refresh tokens are {rotation}.\n"
            "# Paste these lines into the shell you run grpcurl in:",
            *(f"{name}={value}" for name, value in zip(PRINTED_NAMES, values, strict=True)),
            "# Serving until Ctrl-C; its grants are forgotten when it stops.",
            sep="\n",
            flush=True,
        )
        # A timeout on each wait, so that a signal is acted on even where a blocking
        # wait is not interrupted by it.
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
