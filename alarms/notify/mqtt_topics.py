"""What the MQTT channel publishes (alarms/notify/mqtt.py): the event topic
``<prefix>/<enterprise>/<hazard_source>/alarm/<tag-or-interlock>`` with every segment checked (refused,
never mapped: empty, ``+``, ``#``, ``/``, NUL or another C0 control, a leading ``$``), the event and
state documents as UTF-8 JSON (Chinese as is), and a PUBLISH packet's size."""

from __future__ import annotations

import json
from typing import Any

from alarms.notify import AlarmEvent

__all__ = ["ACTIVE_EVENTS", "alarm_topic", "check_prefix", "documents", "packet_bytes"]

ACTIVE_EVENTS = frozenset({"raised", "reraised"})


def _check_segment(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is missing or empty")
    bad = sorted({c for c in value if c in "+#/" or ord(c) < 0x20 or c == "\x7f"})
    if bad:
        raise ValueError(f"{what} {value!r} holds {', '.join(repr(c) for c in bad)}, not allowed in a topic")
    if value.startswith("$"):
        raise ValueError(f"{what} {value!r} starts with '$' (broker topics)")
    return value


def check_prefix(prefix: str) -> str:
    return "/".join(_check_segment(level, f"topic prefix {prefix!r}: level") for level in prefix.split("/"))


def alarm_topic(prefix: str, event: AlarmEvent) -> str:
    """The event topic of ``event``; ValueError naming the label that cannot be a topic segment."""
    labels = dict(event.labels)
    subject = "tag" if labels.get("tag") else "interlock"
    parts = [
        _check_segment(labels.get(name), f"alarm {event.alarm_key!r}: label {name!r}")
        for name in ("enterprise", "hazard_source", subject)
    ]
    return f"{check_prefix(prefix)}/{parts[0]}/{parts[1]}/alarm/{parts[2]}"


def packet_bytes(topic: str, payload: bytes) -> int:
    # PUBLISH QoS 1: topic (2 + n), packet id 2, property length 1 (none), payload; then the fixed header.
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    return 1 + max(1, -(-remaining.bit_length() // 7)) + remaining


def documents(idempotency_key: str, event: AlarmEvent) -> tuple[bytes, bytes]:
    """The event as JSON and the alarm's state after it (UTF-8, Chinese as is, not \\u escapes)."""
    common = {"alarm_key": event.alarm_key, "priority": event.priority, "labels": dict(event.labels)}
    common["message_zh"] = event.message_zh
    body = {"idempotency_key": idempotency_key, "event": event.event, "at_us": event.at_us, **common}
    body["message_en"] = event.message_en
    state = {"state": "ACTIVE" if event.event in ACTIVE_EVENTS else "NORMAL", "since_us": event.at_us}
    return _json(body), _json({**common, **state})


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
