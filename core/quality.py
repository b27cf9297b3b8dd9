"""Quality of a reading: one OPC DA style byte, QQSSSSLL.

QQ is the major status (GOOD 0xC0, UNCERTAIN 0x40, BAD 0x00), SSSS the substatus and LL
the limit bits (kept zero here). Comparing a byte with ``GOOD`` by mask is vectorizable:
``(quality & 0xC0) == 0xC0``.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAJOR_MASK",
    "Quality",
    "from_opcua_status",
    "is_bad",
    "is_good",
    "is_uncertain",
    "major",
    "name_of",
]

MAJOR_MASK = 0xC0


class Quality(IntEnum):
    BAD = 0x00
    BAD_CONFIG_ERROR = 0x04
    BAD_NOT_CONNECTED = 0x08
    BAD_DEVICE_FAILURE = 0x0C
    BAD_SENSOR_FAILURE = 0x10
    BAD_LAST_KNOWN = 0x14
    BAD_COMM_FAILURE = 0x18
    BAD_OUT_OF_SERVICE = 0x1C
    UNCERTAIN = 0x40
    UNCERTAIN_LAST_USABLE = 0x44
    UNCERTAIN_SENSOR_NOT_ACCURATE = 0x50
    UNCERTAIN_EU_EXCEEDED = 0x54
    UNCERTAIN_SUB_NORMAL = 0x58
    GOOD = 0xC0
    GOOD_LOCAL_OVERRIDE = 0xD8


# Friendly aliases used across the code base (the names in DESIGN.md).
GOOD = Quality.GOOD
UNCERTAIN = Quality.UNCERTAIN
BAD = Quality.BAD
COMM_FAILURE = Quality.BAD_COMM_FAILURE
SENSOR_FAILURE = Quality.BAD_SENSOR_FAILURE
OUT_OF_SERVICE = Quality.BAD_OUT_OF_SERVICE
CONFIG_ERROR = Quality.BAD_CONFIG_ERROR
LAST_KNOWN = Quality.BAD_LAST_KNOWN


def major(q: int) -> Quality:
    return Quality(q & MAJOR_MASK) if (q & MAJOR_MASK) != 0x80 else Quality.BAD


def is_good(q: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    return (np.asarray(q, dtype=np.uint8) & MAJOR_MASK) == 0xC0


def is_uncertain(q: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    return (np.asarray(q, dtype=np.uint8) & MAJOR_MASK) == 0x40


def is_bad(q: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    m = np.asarray(q, dtype=np.uint8) & MAJOR_MASK
    return (m == 0x00) | (m == 0x80)  # 0x80 is undefined in OPC DA; treat it as bad


def name_of(q: int) -> str:
    try:
        return Quality(q).name
    except ValueError:
        return f"{major(q).name}(0x{q:02X})"


# OPC UA StatusCode: top two bits are severity (00 good, 01 uncertain, 10 bad); the
# sub-code sits in bits 16..27. Only the sub-codes that change what an operator should
# think are mapped; others fall back to their severity.
_OPCUA_SUBCODES: dict[int, Quality] = {
    0x8005: Quality.BAD_COMM_FAILURE,  # BadCommunicationError
    0x800A: Quality.BAD_COMM_FAILURE,  # BadTimeout
    0x8031: Quality.BAD_COMM_FAILURE,  # BadNoCommunication
    0x808A: Quality.BAD_NOT_CONNECTED,  # BadNotConnected
    0x8032: Quality.BAD_LAST_KNOWN,  # BadWaitingForInitialData
    0x8089: Quality.BAD_CONFIG_ERROR,  # BadConfigurationError
    0x8033: Quality.BAD_CONFIG_ERROR,  # BadNodeIdInvalid
    0x8034: Quality.BAD_CONFIG_ERROR,  # BadNodeIdUnknown
    0x808B: Quality.BAD_DEVICE_FAILURE,  # BadDeviceFailure
    0x808C: Quality.BAD_SENSOR_FAILURE,  # BadSensorFailure
    0x808D: Quality.BAD_OUT_OF_SERVICE,  # BadOutOfService
    0x408F: Quality.UNCERTAIN_LAST_USABLE,  # UncertainNoCommunicationLastUsableValue
    0x4090: Quality.UNCERTAIN_LAST_USABLE,  # UncertainLastUsableValue
    0x4093: Quality.UNCERTAIN_SENSOR_NOT_ACCURATE,  # UncertainSensorNotAccurate
    0x4094: Quality.UNCERTAIN_EU_EXCEEDED,  # UncertainEngineeringUnitsExceeded
    0x4095: Quality.UNCERTAIN_SUB_NORMAL,  # UncertainSubNormal
    0x0096: Quality.GOOD_LOCAL_OVERRIDE,  # GoodLocalOverride
}


def from_opcua_status(status: int) -> Quality:
    """Map an OPC UA StatusCode value (uint32) to a quality byte; never drops a status."""
    status &= 0xFFFFFFFF
    mapped = _OPCUA_SUBCODES.get(status >> 16)
    if mapped is not None:
        return mapped
    severity = status >> 30
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD
