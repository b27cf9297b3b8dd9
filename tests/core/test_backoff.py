"""Backoff policy: exponential growth, cap, jitter range, determinism, no overflow, validation."""

from __future__ import annotations

import random

import pytest

from core.backoff import Backoff


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (7, 60.0), (100, 60.0)]
)
def test_base_grows_exponentially_and_stops_at_the_cap(attempt: int, expected: float) -> None:
    assert Backoff(initial_s=1.0, max_s=60.0).base(attempt) == expected


def test_other_factor_and_a_cap_reached_exactly() -> None:
    policy = Backoff(initial_s=0.5, max_s=4.5, factor=3.0)
    assert [policy.base(a) for a in range(5)] == [0.5, 1.5, 4.5, 4.5, 4.5]


def test_factor_one_is_a_constant_interval() -> None:
    policy = Backoff(initial_s=2.0, max_s=10.0, factor=1.0)
    assert {policy.base(a) for a in (0, 1, 50, 10**9)} == {2.0}


@pytest.mark.parametrize("attempt", [31, 1024, 10**6, 10**18, 2**200])
def test_huge_attempt_counts_do_not_overflow(attempt: int) -> None:
    for factor in (1.5, 2.0, 10.0):
        policy = Backoff(initial_s=0.1, max_s=30.0, factor=factor, jitter=0.25)
        assert policy.base(attempt) == 30.0
        assert 22.5 <= policy.delay(attempt, random.Random(1)) <= 37.5


def test_without_jitter_the_delay_is_the_base_and_draws_nothing() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    policy = Backoff(initial_s=1.0, max_s=8.0)
    assert [policy.delay(a, rng) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert rng.getstate() == state


@pytest.mark.parametrize(("attempt", "full"), [(0, 1.0), (3, 8.0), (10, 60.0), (10**9, 60.0)])
def test_jitter_around_spreads_both_ways_by_the_fraction(attempt: int, full: float) -> None:
    policy = Backoff(initial_s=1.0, max_s=60.0, jitter=0.25, spread="around")
    rng = random.Random(11)
    delays = [policy.delay(attempt, rng) for _ in range(500)]
    assert full * 0.75 <= min(delays) and max(delays) <= full * 1.25
    # Really spread over most of the range, on both sides of the base.
    assert min(delays) < full * 0.8 and max(delays) > full * 1.2


@pytest.mark.parametrize(("attempt", "full"), [(0, 0.5), (2, 2.0), (6, 30.0), (10**6, 30.0)])
def test_jitter_below_never_exceeds_the_cap(attempt: int, full: float) -> None:
    policy = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5, spread="below")
    rng = random.Random(5)
    delays = [policy.delay(attempt, rng) for _ in range(500)]
    assert full / 2 <= min(delays) and max(delays) <= full
    assert min(delays) < full * 0.55 and max(delays) > full * 0.95


def test_full_jitter_stays_non_negative() -> None:
    for spread in ("around", "below"):
        policy = Backoff(initial_s=1.0, max_s=4.0, jitter=1.0, spread=spread)
        rng = random.Random(2)
        assert all(0.0 <= policy.delay(a % 5, rng) <= 8.0 for a in range(1000))


def test_a_seeded_rng_gives_the_same_delays() -> None:
    policy = Backoff(initial_s=1.0, max_s=60.0, jitter=0.25)
    a, b = random.Random(42), random.Random(42)
    first = [policy.delay(n, a) for n in range(20)]
    assert first == [policy.delay(n, b) for n in range(20)]
    assert first != [policy.delay(n, random.Random(43)) for n in range(20)]


def test_attempts_restart_from_the_initial_delay() -> None:
    """The caller resets by counting from 0 again: the policy holds no state."""
    policy = Backoff(initial_s=1.0, max_s=60.0)
    assert policy.delay(10) == 60.0
    assert policy.delay(0) == 1.0


def test_without_an_rng_the_delay_is_still_jittered_and_bounded() -> None:
    policy = Backoff(initial_s=1.0, max_s=60.0, jitter=0.25)
    delays = {policy.delay(2) for _ in range(50)}
    assert len(delays) > 1 and all(3.0 <= d <= 5.0 for d in delays)


def test_a_policy_is_immutable() -> None:
    policy = Backoff(initial_s=1.0, max_s=2.0)
    with pytest.raises(AttributeError):
        policy.max_s = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_s": 0.0, "max_s": 1.0}, "initial_s"),
        ({"initial_s": -1.0, "max_s": 1.0}, "initial_s"),
        ({"initial_s": float("nan"), "max_s": 1.0}, "initial_s"),
        ({"initial_s": 2.0, "max_s": 1.0}, "max_s"),
        ({"initial_s": 1.0, "max_s": float("inf")}, "max_s"),
        ({"initial_s": 1.0, "max_s": 2.0, "factor": 0.5}, "factor"),
        ({"initial_s": 1.0, "max_s": 2.0, "jitter": -0.1}, "jitter"),
        ({"initial_s": 1.0, "max_s": 2.0, "jitter": 1.5}, "jitter"),
        ({"initial_s": 1.0, "max_s": 2.0, "spread": "above"}, "spread"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_a_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff(initial_s=1.0, max_s=2.0).delay(-1)
