"""Quality byte helpers, the OPC UA StatusCode mapping, and the clocks."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import ua

from core import quality
from core.clock import FakeClock, SystemClock, from_datetime, to_datetime
from core.quality import Quality


def test_major_status_masks_are_vectorized() -> None:
    q = np.array([0xC0, 0xD8, 0x40, 0x54, 0x00, 0x18, 0x80], dtype=np.uint8)
    assert quality.is_good(q).tolist() == [True, True, False, False, False, False, False]
    assert quality.is_uncertain(q).tolist() == [False, False, True, True, False, False, False]
    assert quality.is_bad(q).tolist() == [False, False, False, False, True, True, True]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("Good", Quality.GOOD),
        ("GoodLocalOverride", Quality.GOOD_LOCAL_OVERRIDE),
        ("Uncertain", Quality.UNCERTAIN),
        ("UncertainLastUsableValue", Quality.UNCERTAIN_LAST_USABLE),
        ("UncertainNoCommunicationLastUsableValue", Quality.UNCERTAIN_LAST_USABLE),
        ("UncertainEngineeringUnitsExceeded", Quality.UNCERTAIN_EU_EXCEEDED),
        ("UncertainSensorNotAccurate", Quality.UNCERTAIN_SENSOR_NOT_ACCURATE),
        ("UncertainSubNormal", Quality.UNCERTAIN_SUB_NORMAL),
        ("Bad", Quality.BAD),
        ("BadCommunicationError", Quality.BAD_COMM_FAILURE),
        ("BadTimeout", Quality.BAD_COMM_FAILURE),
        ("BadNoCommunication", Quality.BAD_COMM_FAILURE),
        ("BadNotConnected", Quality.BAD_NOT_CONNECTED),
        ("BadWaitingForInitialData", Quality.BAD_LAST_KNOWN),
        ("BadConfigurationError", Quality.BAD_CONFIG_ERROR),
        ("BadNodeIdUnknown", Quality.BAD_CONFIG_ERROR),
        ("BadNodeIdInvalid", Quality.BAD_CONFIG_ERROR),
        ("BadSensorFailure", Quality.BAD_SENSOR_FAILURE),
        ("BadDeviceFailure", Quality.BAD_DEVICE_FAILURE),
        ("BadOutOfService", Quality.BAD_OUT_OF_SERVICE),
        ("BadInternalError", Quality.BAD),  # unmapped sub-code: severity decides
        ("UncertainInitialValue", Quality.UNCERTAIN),
    ],
)
def test_opcua_status_codes_map_by_their_real_values(code: str, expected: Quality) -> None:
    # Values come from asyncua's generated StatusCodes, so a wrong constant in our table fails here.
    assert quality.from_opcua_status(getattr(ua.StatusCodes, code)) is expected


def test_names_of_quality_bytes() -> None:
    assert quality.name_of(0x18) == "BAD_COMM_FAILURE"
    assert quality.name_of(0xC4) == "GOOD(0xC4)"


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start_us=1_000_000)
    assert clock.now_us() == 1_000_000
    clock.advance(1.5)
    assert clock.now_us() == 2_500_000 and clock.monotonic() == 1.5
    clock.set(3_000_000)
    assert clock.monotonic() == 2.0
    with pytest.raises(ValueError, match="backwards"):
        clock.set(0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_fake_clock_sleep_advances_instantly() -> None:
    clock = FakeClock(start_us=0)
    await clock.sleep(60)
    assert clock.now_us() == 60_000_000


def test_system_clock_is_utc_microseconds() -> None:
    now = SystemClock().now_us()
    assert abs(now - from_datetime(datetime.now(UTC))) < 5_000_000


def test_datetime_round_trip_is_exact_to_the_microsecond() -> None:
    dt = datetime(2026, 11, 28, 3, 4, 5, 678901, tzinfo=UTC)
    assert to_datetime(from_datetime(dt)) == dt
    assert from_datetime(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    with pytest.raises(ValueError, match="naive"):
        from_datetime(datetime(2026, 1, 1))
