"""Who is calling (``Principal``), what they may see (``Scope``) and may do (``Permission``).

Tenancy invariant: every query of enterprise data filters by ``Scope.where`` (or checks
``Scope.allows``), and a row outside the scope is answered exactly as a row that does not exist
(404, absent from lists, counts, exports and streams). Enterprise roles see their enterprise; a
county bureau user sees the enterprises of its county; the city bureau, admins, and engineers or
approvers not bound to an enterprise see everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from psycopg import sql

from alarms.commands import Role

__all__ = ["PERMISSIONS", "Permission", "Principal", "Role", "Scope"]


class Permission(StrEnum):
    READ = "read"  # enterprises, hazard sources, tags, history, alarms, interlocks, KPIs
    ALARM_HANDLE = "alarm.handle"  # ack, reset, shelve, unshelve, comment, feedback, respond
    ALARM_SUPERVISE = "alarm.supervise"  # 督办
    ALARM_SERVICE = "alarm.service"  # remove from / restore to service
    CONFIG_VIEW = "config.view"
    BYPASS_REQUEST = "bypass.request"
    BYPASS_APPROVE = "bypass.approve"
    AUDIT_READ = "audit.read"
    USERS_MANAGE = "users.manage"


_ALL = frozenset(Role)
PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.READ: _ALL,
    Permission.ALARM_HANDLE: frozenset({Role.ENTERPRISE_OPERATOR, Role.ENTERPRISE_ADMIN, Role.ADMIN}),
    Permission.ALARM_SUPERVISE: frozenset({Role.BUREAU_DUTY, Role.ADMIN}),
    Permission.ALARM_SERVICE: frozenset({Role.ENTERPRISE_ADMIN, Role.ENGINEER, Role.ADMIN}),
    Permission.CONFIG_VIEW: frozenset({Role.ENGINEER, Role.ENTERPRISE_ADMIN, Role.ADMIN}),
    Permission.BYPASS_REQUEST: frozenset({Role.ENGINEER, Role.ENTERPRISE_ADMIN, Role.ADMIN}),
    Permission.BYPASS_APPROVE: frozenset({Role.APPROVER, Role.ADMIN}),
    Permission.AUDIT_READ: frozenset({Role.ADMIN}),  # audit rows are not per enterprise
    Permission.USERS_MANAGE: frozenset({Role.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class Scope:
    """The enterprises a principal may see: one enterprise, one county's, or all (both None)."""

    enterprise: str | None = None
    county: str | None = None

    @property
    def everything(self) -> bool:
        return self.enterprise is None and self.county is None

    def allows(self, enterprise: str, county: str) -> bool:
        return (self.enterprise is None or enterprise == self.enterprise) and (
            self.county is None or county == self.county
        )

    def where(self, enterprise: sql.Composable, county: sql.Composable) -> tuple[sql.Composable, list[Any]]:
        """A condition on the given enterprise-code and county columns, with its parameters."""
        parts: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        if self.enterprise is not None:
            parts.append(sql.SQL("{} = %s").format(enterprise))
            params.append(self.enterprise)
        if self.county is not None:
            parts.append(sql.SQL("{} = %s").format(county))
            params.append(self.county)
        return sql.SQL("({})").format(sql.SQL(" AND ").join(parts)), params


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    username: str
    display_name: str
    role: Role
    enterprise: str | None  # enterprise roles (and bound engineers/approvers)
    county: str | None  # a county bureau user's county
    via: str  # "token" | "key:<prefix>"

    @property
    def scope(self) -> Scope:
        return Scope(self.enterprise, self.county)

    @property
    def actor(self) -> str:
        """How the alarm journal and the audit log name this principal."""
        return f"{self.display_name} ({self.username})"

    def may(self, permission: Permission) -> bool:
        return self.role in PERMISSIONS[permission]
