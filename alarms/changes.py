"""What the composition root reports to the alarm manager besides condition edges and commands:
a safety function that could no longer act or can again (``SifChange``, from the rule engine's
``sif_state``) and a unit whose suppression by design began or ended (``SuppressionChange``,
from ``hazardwatch.rule_sink.UnitConditions``). Each carries the journal detail and the reason
its alarm messages give."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SifChange", "SuppressionChange"]


@dataclass(frozen=True, slots=True)
class SifChange:
    """An interlock's safety function that could no longer act (``disabled``), or can again."""

    interlock: str  # HAZARD_SOURCE.CODE
    disabled: bool
    can_vote: int  # inputs neither bypassed nor failed now
    m: int  # votes needed as configured
    bypassed: tuple[str, ...] = ()  # input tag keys
    failed: tuple[str, ...] = ()
    in_service: bool = True

    def reason(self) -> tuple[str, str]:
        """Why it cannot act, or what still holds it back when it can: (zh, en)."""
        zh, en = [], []
        if not self.in_service:
            zh.append("联锁停用")
            en.append("out of service")
        if self.bypassed:
            zh.append(f"旁路：{'、'.join(self.bypassed)}")
            en.append(f"bypassed: {', '.join(self.bypassed)}")
        if self.failed:
            zh.append(f"故障：{'、'.join(self.failed)}")
            en.append(f"failed: {', '.join(self.failed)}")
        return "；".join(zh), "; ".join(en)

    def detail(self) -> dict[str, Any]:
        zh, en = self.reason()
        return {
            "bypassed": list(self.bypassed),
            "failed": list(self.failed),
            "in_service": self.in_service,
            "reason": en,
            "reason_zh": zh,
        }


@dataclass(frozen=True, slots=True)
class SuppressionChange:
    """A unit whose suppression-by-design condition (core.plant.SuppressWhen) began or ended."""

    unit: str  # HAZARD_SOURCE.UNIT
    suppressed: bool
    reason: str  # the unit's suppress_when.reason
    tag: str  # key of the tag the condition reads
    value: float  # its value that decided

    def detail(self) -> dict[str, Any]:
        """The journal rows' and the audit row's detail; its reason goes into the messages."""
        # a state rebuilt from the stored rows after a restart has no value that decided it
        now = f"{self.tag} = {self.value:g}" if math.isfinite(self.value) else f"{self.tag} (stored)"
        zh, en = (
            (f"{self.reason}：{now}", f"{self.reason}: {now}")
            if self.suppressed
            else (f"解除设计抑制：{now}", f"suppression by design ended: {now}")
        )
        value = self.value if math.isfinite(self.value) else None
        return {"unit": self.unit, "tag": self.tag, "value": value, "reason": en, "reason_zh": zh}
