"""Credentials for GitHub API calls: a personal access token, or a GitHub App installation token.

An App authenticates as itself with a short RS256 JWT (iss = App id, iat 60 s in the past for
clock drift, exp under GitHub's 10-minute maximum), exchanges it for an installation token,
and caches that token until shortly before its `expires_at`, so a busy controller does not
mint a token per call. Tokens live in SecretStr and are only ever turned into a header value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import jwt
from pydantic import SecretStr

from plugins.handlers.github.scope import Scope, ScopeKind

JWT_BACKDATE_SECONDS = 60  # GitHub's advice: allow for clock drift
JWT_LIFETIME_SECONDS = 540  # exp - now; with the backdated iat, exp - iat = 10 min, GitHub's maximum
REFRESH_MARGIN_SECONDS = 300.0  # renew an installation token 5 min before it expires


class Auth(Protocol):
    """What the client asks of a credential: the Authorization header, and a way to drop it."""

    async def authorization(self, exchange: TokenExchange) -> SecretStr: ...

    def invalidate(self) -> bool:
        """Forget a cached token after a 401; True when a fresh one may fix the call."""
        ...


class TokenExchange(Protocol):
    """The App endpoints, called with the App's JWT (implemented by the client)."""

    async def find_installation(self, scope: Scope, app_jwt: SecretStr) -> int: ...

    async def create_installation_token(
        self, installation_id: int, app_jwt: SecretStr
    ) -> tuple[SecretStr, float]: ...


@dataclass
class TokenAuth:
    """A personal access token (classic or fine-grained): sent as is, nothing to refresh."""

    token: SecretStr

    async def authorization(self, exchange: TokenExchange) -> SecretStr:
        return SecretStr(f"Bearer {self.token.get_secret_value()}")

    def invalidate(self) -> bool:
        return False


def app_jwt(app_id: int, private_key: SecretStr, now: float) -> SecretStr:
    """The App's own JWT (RS256), valid from 60 s ago for at most 10 minutes."""
    issued = int(now) - JWT_BACKDATE_SECONDS
    claims = {"iat": issued, "exp": int(now) + JWT_LIFETIME_SECONDS, "iss": str(app_id)}
    return SecretStr(jwt.encode(claims, private_key.get_secret_value(), algorithm="RS256"))


def token_is_fresh(expires_at: float | None, now: float, margin: float = REFRESH_MARGIN_SECONDS) -> bool:
    return expires_at is not None and now < expires_at - margin


class AppAuth:
    """GitHub App credentials: JWT → installation token, cached until `margin` before expiry."""

    def __init__(
        self,
        *,
        app_id: int,
        private_key: SecretStr,
        installation_id: int | None = None,
        scope: Scope | None = None,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if installation_id is None and (scope is None or scope.kind is ScopeKind.ENTERPRISE):
            raise ValueError(
                "GitHub App auth needs installation_id, or an owner (and repo) to look the installation up"
            )
        self.app_id = app_id
        self._key = private_key
        self.installation_id = installation_id
        self._scope = scope
        self._margin = refresh_margin
        self._clock = clock
        self._token: SecretStr | None = None
        self._expires_at: float | None = None
        self._lock = asyncio.Lock()
        self.tokens_minted = 0

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id}, installation_id={self.installation_id})"

    def jwt(self) -> SecretStr:
        return app_jwt(self.app_id, self._key, self._clock())

    async def authorization(self, exchange: TokenExchange) -> SecretStr:
        token = await self._installation_token(exchange)
        return SecretStr(f"Bearer {token.get_secret_value()}")

    async def _installation_token(self, exchange: TokenExchange) -> SecretStr:
        async with self._lock:  # one refresh at a time; waiters reuse its result
            if self._token is not None and token_is_fresh(self._expires_at, self._clock(), self._margin):
                return self._token
            if self.installation_id is None:
                assert self._scope is not None  # checked in __init__
                self.installation_id = await exchange.find_installation(self._scope, self.jwt())
            token, expires_at = await exchange.create_installation_token(self.installation_id, self.jwt())
            self._token, self._expires_at = token, expires_at
            self.tokens_minted += 1
            return token

    def invalidate(self) -> bool:
        self._token = self._expires_at = None
        return True
