"""One user per role of the two-enterprise test plant (tests/core/data/two_enterprises.yaml:
enterprise AA in 孝义市, BB in 文水县), shared by the API, console and end-to-end tests."""

from __future__ import annotations

import functools
from typing import NamedTuple

from api.security import hash_password
from api.users import add_user
from storage.db import Conn

PASSWORD = "correct horse battery"


class TestUser(NamedTuple):
    username: str
    display_name: str
    role: str
    enterprise: str | None = None
    county: str | None = None


USERS = {
    u.username: u
    for u in (
        TestUser("op_aa", "张伟", "enterprise_operator", "AA"),
        TestUser("op_bb", "王芳", "enterprise_operator", "BB"),
        TestUser("admin_aa", "刘洋", "enterprise_admin", "AA"),
        TestUser("eng_aa", "陈静", "engineer", "AA"),
        TestUser("approver_aa", "杨勇", "approver", "AA"),
        TestUser("bureau_city", "赵敏", "bureau_duty"),
        TestUser("bureau_xy", "孙强", "bureau_duty", county="孝义市"),
        TestUser("admin", "系统管理员", "admin"),
    )
}


@functools.cache
def _hash() -> str:
    return hash_password(PASSWORD)


async def add_users(conn: Conn) -> None:
    """Every user of ``USERS``: the first through ``add_user`` (its checks), the rest with the
    same Argon2 hash computed once per process (hashing costs ~0.1 s each, per test)."""
    first, *rest = USERS.values()
    await add_user(
        conn, first.username, first.display_name, first.role, PASSWORD, enterprise=first.enterprise
    )
    for u in rest:
        await conn.execute(
            """INSERT INTO app_user (username, display_name, role, enterprise, county, password_hash)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            (u.username, u.display_name, u.role, u.enterprise, u.county, _hash()),
        )
