"""Secrets of authentication: Argon2id password hashes, signed short-lived tokens, API keys.

Tokens are HS256 JWTs carrying the user id, the token kind (access | refresh) and the user's
``token_version``: changing a password or disabling a user raises the version in the database,
which kills every token issued before (checked on each request). The signing secret comes from
the environment (``HAZARDWATCH_JWT_SECRET``) or a file (``HAZARDWATCH_JWT_SECRET_FILE``), never
from the config or the repo. API keys are ``hwk_<prefix>_<secret>``; only the SHA-256 of the
secret is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import HazardWatchError

__all__ = [
    "SECRET_ENV",
    "IssuedKey",
    "SecretError",
    "TokenClaims",
    "TokenError",
    "TokenKind",
    "dummy_verify",
    "dummy_verify_off_loop",
    "hash_password",
    "issue_token",
    "jwt_secret",
    "new_api_key",
    "parse_api_key",
    "read_token",
    "secret_digest",
    "verify_password",
    "verify_password_off_loop",
]

SECRET_ENV = "HAZARDWATCH_JWT_SECRET"
MIN_SECRET_BYTES = 32
MIN_PASSWORD = 10
_ALGORITHM = "HS256"


class SecretError(HazardWatchError):
    """The token-signing secret is missing, unreadable or too short (the message says which)."""


_ISSUER = "hazardwatch"
_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106 low-memory profile
_DUMMY = _hasher.hash("a password nobody has")
# Verifying costs ~0.1-0.3 s of CPU and 64 MiB: off the event loop (argon2-cffi releases the
# GIL), on a few threads of its own so a burst of logins queues instead of taking every core
# and the default executor's threads.
_HASHING = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="argon2")


def jwt_secret(environ: dict[str, str] | None = None) -> bytes:
    """The token-signing secret from ``HAZARDWATCH_JWT_SECRET`` or the file named by
    ``HAZARDWATCH_JWT_SECRET_FILE``; SecretError when neither is set or it is too short."""
    env = os.environ if environ is None else environ
    value = env.get(SECRET_ENV)
    source = SECRET_ENV
    path = env.get(f"{SECRET_ENV}_FILE")
    if value is None and path:
        source = f"{SECRET_ENV}_FILE ({path})"
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{source}: cannot read: {exc.strerror}") from None
    if not value:
        raise SecretError(
            f"no token-signing secret: set {SECRET_ENV} or {SECRET_ENV}_FILE "
            f"(at least {MIN_SECRET_BYTES} bytes, e.g. `openssl rand -hex 32`)"
        )
    raw = value.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise SecretError(f"{source}: the secret must be at least {MIN_SECRET_BYTES} bytes, got {len(raw)}")
    return raw


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; a user without a password never matches."""
    if stored is None:
        dummy_verify(password)
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_verify(password: str) -> None:
    """Spend a hash's time for an unknown user, so response times do not tell who exists."""
    with contextlib.suppress(VerificationError):
        _hasher.verify(_DUMMY, password)


async def verify_password_off_loop(stored: str | None, password: str) -> bool:
    """``verify_password`` on a hashing thread: the event loop keeps serving meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_HASHING, verify_password, stored, password)


async def dummy_verify_off_loop(password: str) -> None:
    """``dummy_verify`` on a hashing thread."""
    await asyncio.get_running_loop().run_in_executor(_HASHING, dummy_verify, password)


class TokenKind(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


class TokenError(Exception):
    """A token that is malformed, expired, of the wrong kind or not signed by us."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    kind: TokenKind
    version: int
    expires: int  # Unix seconds


def issue_token(secret: bytes, user_id: int, version: int, kind: TokenKind, ttl_s: float) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": _ISSUER,
        "sub": str(user_id),
        "typ": kind.value,
        "ver": version,
        "iat": now,
        "exp": now + max(1, round(ttl_s)),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def read_token(secret: bytes, token: str, kind: TokenKind) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],  # never the token's own choice ("none", RS/HS confusion)
            issuer=_ISSUER,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    if claims.get("typ") != kind.value:
        raise TokenError(f"not an {kind.value} token")
    try:
        return TokenClaims(int(claims["sub"]), kind, int(claims["ver"]), int(claims["exp"]))
    except (KeyError, TypeError, ValueError):
        raise TokenError("malformed claims") from None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    prefix: str  # hwk_XXXXXXXX: stored, shown in lists
    key: str  # the whole key, shown once
    digest: bytes  # SHA-256 of the secret part, stored


def new_api_key() -> IssuedKey:
    prefix = "hwk_" + secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(prefix, f"{prefix}_{secret}", secret_digest(secret))


def parse_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "hwk" or len(parts[1]) != 8 or len(parts[2]) < 20:
        return None
    return f"hwk_{parts[1]}", parts[2]


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
