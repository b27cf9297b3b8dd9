"""Users and API keys in the database (app_user, api_key): create, list, disable, change
passwords, issue and revoke keys, and find who a credential belongs to.

Invariant: a failed login is indistinguishable from outside whatever the reason (unknown user,
wrong password, disabled, locked); the reason is kept in the audit log only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from alarms.commands import Role
from api.principal import Principal
from api.security import (
    IssuedKey,
    dummy_verify_off_loop,
    hash_password,
    new_api_key,
    parse_api_key,
    same_digest,
    secret_digest,
    verify_password_off_loop,
)
from storage.db import Conn, translate_errors

__all__ = [
    "KeyRow",
    "LoginResult",
    "UserError",
    "UserRow",
    "add_user",
    "create_key",
    "list_keys",
    "list_users",
    "login",
    "principal_by_id",
    "principal_by_key",
    "revoke_key",
    "set_disabled",
    "set_password",
]

_USER_COLUMNS = "id, username, display_name, role, enterprise, county, disabled, locked_until, token_version"


class UserError(ValueError):
    """A user or key operation that cannot be done, with the reason (names the field)."""


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    display_name: str
    role: Role
    enterprise: str | None
    county: str | None
    disabled: bool
    locked_until: datetime | None
    token_version: int

    def principal(self, via: str) -> Principal:
        return Principal(
            self.id, self.username, self.display_name, self.role, self.enterprise, self.county, via
        )


@dataclass(frozen=True, slots=True)
class KeyRow:
    prefix: str
    username: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def _user(row: dict[str, Any]) -> UserRow:
    return UserRow(**{**row, "role": Role(row["role"])})


def _check_binding(role: Role, enterprise: str | None, county: str | None) -> None:
    # a blank is no binding: filters that test truth would read it as "everything" (review F1)
    if enterprise is not None and not enterprise.strip():
        raise UserError("enterprise: must not be blank (omit it for no enterprise)")
    if county is not None and not county.strip():
        raise UserError("county: must not be blank (omit it for the city bureau)")
    if role in (Role.ENTERPRISE_OPERATOR, Role.ENTERPRISE_ADMIN) and not enterprise:
        raise UserError(f"enterprise: role {role} needs the user's enterprise code")
    if role in (Role.BUREAU_DUTY, Role.ADMIN) and enterprise:
        raise UserError(f"enterprise: role {role} is not bound to an enterprise")
    if county and role is not Role.BUREAU_DUTY:
        raise UserError(f"county: only bureau_duty users have a county (jurisdiction), not {role}")


async def _enterprise_exists(conn: Conn, code: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM enterprise WHERE code = %s", (code,))
    return await cur.fetchone() is not None


async def add_user(
    conn: Conn,
    username: str,
    display_name: str,
    role: Role | str,
    password: str | None,
    *,
    enterprise: str | None = None,
    county: str | None = None,
) -> UserRow:
    """Create a user; UserError naming the field when the role, binding or password is wrong.
    An enterprise must be in the registry (run ``hazardwatch db sync`` first)."""
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise UserError("username: 1-64 characters without spaces")
    if not display_name.strip():
        raise UserError("display_name: must not be empty")
    try:
        role = Role(role)
    except ValueError:
        raise UserError(f"role: unknown {role!r} (known: {', '.join(Role)})") from None
    _check_binding(role, enterprise, county)
    try:
        hashed = None if password is None else hash_password(password)
    except ValueError as exc:
        raise UserError(f"password: {exc}") from None
    with translate_errors("add user"):
        async with conn.transaction():
            if enterprise and not await _enterprise_exists(conn, enterprise):
                raise UserError(f"enterprise: no enterprise {enterprise!r} in the registry")
            cur = await conn.execute(
                """INSERT INTO app_user (username, display_name, role, enterprise, county, password_hash)
                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username) DO NOTHING
                   RETURNING """
                + _USER_COLUMNS,
                (username, display_name.strip(), role.value, enterprise, county, hashed),
            )
            row = await cur.fetchone()
    if row is None:
        raise UserError(f"username: {username!r} already exists")
    return _user(dict(zip(_USER_COLUMNS.split(", "), row, strict=True)))


async def list_users(conn: Conn) -> list[UserRow]:
    with translate_errors("list users"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_USER_COLUMNS} FROM app_user ORDER BY username")
            return [_user(r) for r in await cur.fetchall()]


async def set_disabled(conn: Conn, username: str, disabled: bool) -> None:
    """Disable (every token and key stops working at once) or enable a user."""
    with translate_errors("disable user"):
        cur = await conn.execute(
            """UPDATE app_user SET disabled = %s, token_version = token_version + 1, updated_at = now()
               WHERE username = %s""",
            (disabled, username),
        )
    if cur.rowcount == 0:
        raise UserError(f"username: no user {username!r}")


async def set_password(conn: Conn, username: str, password: str) -> None:
    """Replace the password, unlock, and end every session of the user."""
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise UserError(f"password: {exc}") from None
    with translate_errors("change password"):
        cur = await conn.execute(
            """UPDATE app_user SET password_hash = %s, token_version = token_version + 1,
                   failed_logins = 0, locked_until = NULL, updated_at = now()
               WHERE username = %s""",
            (hashed, username),
        )
    if cur.rowcount == 0:
        raise UserError(f"username: no user {username!r}")


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: UserRow | None  # None: refused
    reason: str  # for the audit log: ok | unknown user | wrong password | disabled | locked
    locked_now: bool = False  # this failure locked the account


async def login(
    conn: Conn, username: str, password: str, *, max_failures: int, lockout: timedelta
) -> LoginResult:
    """Check a password, counting consecutive failures and locking the account after
    ``max_failures`` for ``lockout``. A locked account refuses even the right password.

    The hash is verified off the event loop and outside any transaction (no row lock held for
    the ~0.2 s it takes); the outcome is then written by one conditional UPDATE, so concurrent
    attempts count every failure and none succeeds on an account locked or changed meanwhile."""
    now = datetime.now(UTC)
    if "\x00" in username:  # PostgreSQL text cannot hold NUL: nobody has such a name
        await dummy_verify_off_loop(password)
        return LoginResult(None, "unknown user")
    with translate_errors("log in"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM app_user WHERE username = %s", (username,)
            )
            row = await cur.fetchone()
    if row is None:
        await dummy_verify_off_loop(password)
        return LoginResult(None, "unknown user")
    stored = row.pop("password_hash")
    user = _user(row)
    if user.locked_until is not None and user.locked_until > now:
        await dummy_verify_off_loop(password)
        return LoginResult(None, "locked")
    good = await verify_password_off_loop(stored, password)
    if user.disabled:
        return LoginResult(None, "disabled")
    with translate_errors("log in"):
        if good:
            # only if still the password checked, enabled and unlocked; the row as it is now
            # (its token_version) goes into the tokens
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    f"""UPDATE app_user SET failed_logins = 0, locked_until = NULL
                        WHERE id = %(id)s AND password_hash = %(stored)s AND NOT disabled
                          AND (locked_until IS NULL OR locked_until <= %(now)s)
                        RETURNING {_USER_COLUMNS}""",
                    {"id": user.id, "stored": stored, "now": now},
                )
                fresh = await cur.fetchone()
            if fresh is None:
                return LoginResult(None, "changed during login (locked, disabled or new password)")
            return LoginResult(_user(fresh), "ok")
        # counted in the row itself: concurrent failures each add one, and the one that reaches
        # max_failures locks (and restarts the count); an account locked meanwhile is not counted
        counting = await conn.execute(
            """UPDATE app_user
               SET failed_logins = CASE WHEN failed_logins + 1 >= %(max)s THEN 0 ELSE failed_logins + 1 END,
                   locked_until = CASE WHEN failed_logins + 1 >= %(max)s THEN %(until)s::timestamptz END
               WHERE id = %(id)s AND (locked_until IS NULL OR locked_until <= %(now)s)
               RETURNING locked_until IS NOT NULL""",
            {"id": user.id, "max": max_failures, "until": now + lockout, "now": now},
        )
        counted = await counting.fetchone()
    if counted is None:
        return LoginResult(None, "locked")
    return LoginResult(None, "wrong password", locked_now=bool(counted[0]))


async def principal_by_id(conn: Conn, user_id: int, version: int) -> Principal | None:
    """The user of a token, if still enabled and the token's version is current."""
    with translate_errors("read user"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_USER_COLUMNS} FROM app_user WHERE id = %s", (user_id,))
            row = await cur.fetchone()
    if row is None:
        return None
    user = _user(row)
    if user.disabled or user.token_version != version:
        return None
    return user.principal("token")


async def principal_by_key(conn: Conn, key: str) -> Principal | None:
    """The user of an API key, if the key is well formed, known, not revoked and its user enabled."""
    parsed = parse_api_key(key)
    if parsed is None:
        return None
    prefix, secret = parsed
    with translate_errors("read API key"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"""SELECT k.secret_sha256, {", ".join("u." + c for c in _USER_COLUMNS.split(", "))}
                    FROM api_key k JOIN app_user u ON u.id = k.user_id
                    WHERE k.prefix = %s AND k.revoked_at IS NULL""",
                (prefix,),
            )
            row = await cur.fetchone()
        if row is None or not same_digest(bytes(row.pop("secret_sha256")), secret_digest(secret)):
            return None
        user = _user(row)
        if user.disabled:
            return None
        await conn.execute("UPDATE api_key SET last_used_at = now() WHERE prefix = %s", (prefix,))
    return user.principal(f"key:{prefix}")


async def create_key(conn: Conn, username: str, name: str) -> IssuedKey:
    if not name.strip():
        raise UserError("name: say what uses the key")
    issued = new_api_key()
    with translate_errors("create API key"):
        cur = await conn.execute(
            """INSERT INTO api_key (prefix, secret_sha256, user_id, name)
               SELECT %s, %s, id, %s FROM app_user WHERE username = %s""",
            (issued.prefix, issued.digest, name.strip(), username),
        )
    if cur.rowcount == 0:
        raise UserError(f"user: no user {username!r}")
    return issued


async def revoke_key(conn: Conn, prefix: str) -> None:
    with translate_errors("revoke API key"):
        cur = await conn.execute(
            "UPDATE api_key SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL", (prefix,)
        )
    if cur.rowcount == 0:
        raise UserError(f"prefix: no active key {prefix!r}")


async def list_keys(conn: Conn) -> list[KeyRow]:
    with translate_errors("list API keys"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """SELECT k.prefix, u.username, k.name, k.created_at, k.revoked_at, k.last_used_at
                   FROM api_key k JOIN app_user u ON u.id = k.user_id ORDER BY k.created_at"""
            )
            return [KeyRow(**r) for r in await cur.fetchall()]
