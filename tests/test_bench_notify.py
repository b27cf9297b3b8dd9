"""bench/notify.py: raises matched to what each stage saw, the verdict, and the probe's plant."""

from __future__ import annotations

import math

from bench.notify import STAGES, Sample, Window, match, render
from bench.notify_plant import PROBE_H, bench_plant

NAN = math.nan


def test_each_stage_takes_the_first_record_of_the_same_probe_and_value_after_the_previous_one() -> None:
    raises = [(0, 200.0, 10.0), (1, 200.0, 10.25)]
    stages = {
        "collected": [(0, 200.4, 9.0), (1, 199.6, 10.30), (0, 260.0, 10.02), (0, 200.3, 10.05)],
        "edge": [(0, 200.3, 10.04), (0, 200.3, 10.06), (1, 199.6, 10.31)],
        "committed": [(0, 200.3, 10.20), (1, 199.6, 10.40)],
        # no value at that stage: any record of the probe after the commit
        "claimed": [(1, NAN, 10.35), (0, NAN, 10.30), (1, NAN, 10.50)],
        "send called": [(0, 200.3, 10.40)],  # probe 1's send never called
        "gateway": [(0, 200.3, 10.45), (1, 199.6, 10.48), (1, 199.6, 10.60)],
    }
    first, second = match(raises, stages)
    assert [round((first.at[s] or 0) - 10.0, 2) for s in STAGES] == [0.05, 0.06, 0.2, 0.3, 0.4, 0.45]
    assert second.at["claimed"] == 10.50  # 10.35 came before its commit
    assert second.at["send called"] is None
    assert second.at["gateway"] == 10.60  # searched from the last stage found (10.48 came before its claim)
    assert round(first.ms("gateway") or 0) == 450
    assert round(first.ms("gateway", "send called") or 0) == 50
    assert second.ms("gateway", "send called") is None


def _window(level: int, total_ms: list[float], lookups: int = 0) -> Window:
    samples = []
    for i, ms in enumerate(total_ms):
        t0 = float(i)
        at = {s: t0 + ms / 1000 * (j + 1) / len(STAGES) for j, s in enumerate(STAGES)}
        samples.append(Sample(i % 8, 200.0, t0, dict(at)))
    return Window(level, samples, [5.0], lookups)


def test_the_verdict_follows_the_median_of_the_windows_p99_at_the_target_rate() -> None:
    fast = [_window(n, [100.0] * 50) for n in (1_000, 10_000) for _ in range(3)]
    assert "**met**" in render(fast, 1.0)
    slow = [*fast[:3], _window(10_000, [100.0] * 49 + [900.0]), *fast[4:]]
    assert "**met**" in render(slow, 1.0)  # one window's tail: the median of three still meets it
    slower = [*fast[:3], *(_window(10_000, [100.0] * 49 + [900.0]) for _ in range(2)), fast[5]]
    assert "**not met**" in render(slower, 1.0)


def test_a_raise_that_never_reached_the_gateway_fails_the_target_and_disturbances_are_explained() -> None:
    windows = [_window(10_000, [100.0] * 50) for _ in range(3)]
    windows[0].samples[0].at["gateway"] = None
    text = render(windows, 1.0)
    assert "**not met**" in text and "never reached the gateway" in text
    assert "*Lookups*" not in text
    assert "*Collector errors*" not in text
    windows[1].lookups = 2
    windows[2].failures = 1
    text = render(windows, 1.0)
    assert "*Lookups*" in text and "*Collector errors*" in text


def test_the_probe_alarms_at_once_past_its_h_limit() -> None:
    plant = bench_plant(3)
    probes = [t for t in plant.tags() if t.key.startswith("P")]
    assert len(probes) == 8 and len({t.source.device for t in probes}) == 8
    for tag in probes:
        assert tag.limits is not None and tag.limits.h == PROBE_H and tag.limits.on_delay_s == 0
