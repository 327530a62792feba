"""Credentials: personal access tokens, GitHub App JWTs, installation tokens; rate-limit buckets.

GitHub accepts ``Authorization: Bearer <t>`` and ``token <t>``. App endpoints (``/app/...`` and
``.../installation``) take only an App JWT: RS256, ``iss`` = the App id, ``exp`` at most 10
minutes ahead. Installation tokens (``ghs_...``) expire and are then "Bad credentials", which
is what a client's token refresh must handle.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import jwt

from anklet.dev.fake_github.errors import ApiError
from anklet.dev.fake_github.state import Installation

JWT_MAX_LIFETIME = 600.0
#: Clock drift GitHub tolerates on ``iat`` (its docs suggest back-dating ``iat`` by 60 s).
JWT_LEEWAY = 60.0
RATE_WINDOW = 3600.0
IAT_MESSAGE = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
)


def bad_credentials() -> ApiError:
    return ApiError(401, "Bad credentials")


def jwt_error(message: str = "A JSON web token could not be decoded") -> ApiError:
    return ApiError(401, message)


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``token`` (a PAT), ``installation``, ``app`` (a JWT) or ``anonymous``."""

    kind: str
    key: str
    installation: Installation | None = None


@dataclass
class InstallationToken:
    token: str
    installation: Installation
    expires_at: float


@dataclass
class Bucket:
    limit: int
    reset: float
    used: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class Auth:
    tokens: Iterable[str]
    app_id: int | None = None
    app_public_key_pem: str | None = None
    installation_token_ttl: float = 3600.0
    rate_limit: int = 5000
    _tokens: set[str] = field(init=False)
    _issued: dict[str, InstallationToken] = field(default_factory=dict, init=False)
    _buckets: dict[str, Bucket] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._tokens = set(self.tokens)

    @staticmethod
    def _credential(header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            return None
        return value.strip()

    def authenticate(self, header: str | None, *, optional: bool = False) -> Principal:
        """A PAT or an unexpired installation token; 401 otherwise."""
        credential = self._credential(header)
        if credential is None:
            if optional:
                return Principal(kind="anonymous", key="anonymous")
            raise ApiError(401, "Requires authentication")
        if credential in self._tokens:
            return Principal(kind="token", key=credential)
        issued = self._issued.get(credential)
        if issued is not None:
            if time.time() >= issued.expires_at:
                del self._issued[credential]
                raise bad_credentials()
            return Principal(kind="installation", key=credential, installation=issued.installation)
        raise bad_credentials()

    def authenticate_app(self, header: str | None) -> Principal:
        """An App JWT, checked as GitHub does (messages are GitHub's)."""
        credential = self._credential(header)
        if credential is None:
            raise ApiError(401, "Requires authentication")
        if self.app_id is None:
            raise jwt_error("A JSON web token could not be decoded (no GitHub App is configured in the fake)")
        try:
            header_fields = jwt.get_unverified_header(credential)
        except jwt.PyJWTError as exc:
            raise jwt_error() from exc
        if header_fields.get("alg") != "RS256":
            raise jwt_error()
        try:
            if self.app_public_key_pem:
                claims = jwt.decode(
                    credential,
                    self.app_public_key_pem,
                    algorithms=["RS256"],
                    leeway=JWT_LEEWAY,
                    options={"require": ["exp", "iat", "iss"], "verify_iss": False},
                )
            else:
                claims = jwt.decode(credential, options={"verify_signature": False})
        except jwt.ExpiredSignatureError as exc:
            raise jwt_error(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
                "which the assertion expires"
            ) from exc
        except jwt.ImmatureSignatureError as exc:
            raise jwt_error(IAT_MESSAGE) from exc
        except jwt.PyJWTError as exc:
            raise jwt_error() from exc
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp <= now:
            raise jwt_error(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
                "which the assertion expires"
            )
        if exp - now > JWT_MAX_LIFETIME + 1:
            raise jwt_error("'Expiration time' claim ('exp') is too far in the future")
        if not isinstance(iat, int | float) or iat > now + JWT_LEEWAY:
            raise jwt_error(IAT_MESSAGE)
        if str(claims.get("iss")) != str(self.app_id):
            raise jwt_error("Integration not found")
        return Principal(kind="app", key=f"app:{self.app_id}")

    def issue_installation_token(self, installation: Installation) -> InstallationToken:
        issued = InstallationToken(
            token="ghs_" + secrets.token_urlsafe(27)[:36],
            installation=installation,
            expires_at=time.time() + self.installation_token_ttl,
        )
        self._issued[issued.token] = issued
        return issued

    # --- rate-limit accounting -----------------------------------------------------------------

    def bucket(self, principal: Principal, now: float) -> Bucket:
        """The principal's core bucket (60/h anonymous, ``rate_limit``/h otherwise), rolled over
        every hour."""
        bucket = self._buckets.get(principal.key)
        if bucket is None or now >= bucket.reset:
            limit = 60 if principal.kind == "anonymous" else self.rate_limit
            bucket = Bucket(limit=limit, reset=float(math.ceil(now + RATE_WINDOW)))
            self._buckets[principal.key] = bucket
        return bucket
