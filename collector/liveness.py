"""Liveness: is anybody still measuring behind a link that answers?

A gateway can keep its OPC UA session (or answer Modbus requests) while the PLC behind it
is dead; the values then simply stop changing, and subscriptions report nothing. A device
proves it is alive by a *sign*: its heartbeat (a PLC counter or clock, or the server's own
status clock) changing, or, where none is declared, any of its values changing. When no
sign arrives for ``max_age_s`` the device is *tripped*: its source marks every tag of the
device BAD|COMM_FAILURE and reports the device down, until the next sign (fresh data).

Time is the monotonic seconds the source passes in; the first observation starts the clock,
so a device that never changes trips ``max_age_s`` after collection starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["Liveness"]

log = logging.getLogger(__name__)


@dataclass
class Liveness:
    device: str
    max_age_s: float
    what: str  # "heartbeat s=PLC.Clock" / "max silence": for log lines
    last_sign_s: float | None = None
    tripped: bool = False
    trips: int = 0

    def observe(self, now_s: float, sign: bool) -> bool:
        """Record one look at the device (``sign``: it proved to be alive); True while it counts as live."""
        if sign or self.last_sign_s is None:
            if self.tripped and sign:
                log.warning(
                    "%s: %s changes again after %.1f s; data are fresh",
                    self.device,
                    self.what,
                    self.age(now_s),
                )
                self.tripped = False
            self.last_sign_s = now_s
        elif not self.tripped and self.age(now_s) > self.max_age_s:
            self.tripped = True
            self.trips += 1
            log.error(
                "%s: %s unchanged for %.1f s (limit %g s): nobody is measuring; every tag of the device "
                "BAD|COMM_FAILURE until fresh data arrive",
                self.device,
                self.what,
                self.age(now_s),
                self.max_age_s,
            )
        return not self.tripped

    def age(self, now_s: float) -> float:
        return 0.0 if self.last_sign_s is None else now_s - self.last_sign_s
