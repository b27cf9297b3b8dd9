"""Backoff: the one retry-delay policy for every component that waits before trying again.

A policy is data (frozen): the delay before retry ``attempt`` (0 for the first retry) is
``initial_s * factor ** attempt``, capped at ``max_s``, then spread by ``jitter`` (a
fraction) so that many collectors or processes failing together do not retry in step.
Callers keep their own attempt counter (they reset it when something worked), so the
policy can be shared and stays trivially testable with a seeded ``random.Random``.

Two spreads, as the call sites need them:

- ``"around"``: uniform in ``base * [1 - jitter, 1 + jitter]``; the mean is the base, so a
  delay at the cap may exceed ``max_s`` by the jitter fraction (at most ``max_s * (1 + jitter)``).
- ``"below"``: uniform in ``base * [1 - jitter, 1]`` ("equal jitter" at 0.5); never above
  ``max_s``.

Invariants: the delay is finite and ``>= 0`` for any attempt, however large (no float
overflow: the exponent stops growing once the cap is reached); with ``jitter == 0`` it
is deterministic and no random number is drawn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["Backoff"]

_RNG = random.Random()  # for callers that do not inject one (production); tests pass a seeded one


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float
    max_s: float
    factor: float = 2.0
    jitter: float = 0.0
    spread: Literal["around", "below"] = "around"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_s) and self.initial_s > 0):
            raise ValueError(f"backoff initial_s must be > 0, got {self.initial_s!r}")
        if not (math.isfinite(self.max_s) and self.max_s >= self.initial_s):
            raise ValueError(f"backoff max_s must be >= initial_s ({self.initial_s!r}), got {self.max_s!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"backoff factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter must be a fraction in [0, 1], got {self.jitter!r}")
        if self.spread not in ("around", "below"):
            raise ValueError(f"backoff spread must be 'around' or 'below', got {self.spread!r}")

    def base(self, attempt: int) -> float:
        """The delay before retry ``attempt`` without jitter: exponential, capped at ``max_s``."""
        if attempt < 0:
            raise ValueError(f"backoff attempt must be >= 0, got {attempt}")
        if self.factor == 1 or attempt == 0:
            return self.initial_s
        # Past the attempt that reaches the cap the result is max_s: stop the exponent there,
        # so a counter that ran for weeks cannot overflow the float power.
        to_cap = math.log(self.max_s / self.initial_s) / math.log(self.factor)
        if attempt > to_cap:
            return self.max_s
        return min(self.max_s, self.initial_s * self.factor**attempt)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered delay (seconds) before retry ``attempt``; see the module docstring."""
        base = self.base(attempt)
        if self.jitter == 0:
            return base
        r = rng or _RNG
        if self.spread == "around":
            return max(0.0, base * (1 + r.uniform(-self.jitter, self.jitter)))
        return max(0.0, base * (1 - r.uniform(0, self.jitter)))
