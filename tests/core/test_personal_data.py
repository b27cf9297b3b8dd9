"""Phone numbers in the plant model never reach a log whole: the repr and str of a person, an
enterprise and everything holding them show 138****1234; the values themselves stay whole for
the notifiers (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

from core.config import load_plant

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
WHOLE = re.compile(r"(?<!\d)1\d{10}(?!\d)|0\d{2,3}-?\d{7,8}")


def test_reprs_mask_phones_and_values_keep_them() -> None:
    plant = load_plant(DEMO, env={})
    enterprise = next(e for e in plant.enterprises if e.duty_phone)
    baobao = next(h.baobao for e in plant.enterprises for h in e.hazard_sources if h.baobao)
    for shown in (
        repr(plant),
        str(plant),
        repr(enterprise),
        str(enterprise),
        repr(baobao),
        str(baobao.principal),
    ):
        assert not WHOLE.search(shown), WHOLE.search(shown)
    assert "****" in repr(baobao.principal) and f"duty_phone='{enterprise.duty_phone[:3]}" in repr(enterprise)
    assert WHOLE.fullmatch(baobao.principal.phone)  # the value itself is whole
    assert baobao.principal.model_dump()["phone"] == baobao.principal.phone
