"""The receivers and escalation policies every routes.yaml has without declaring them (a
receiver or policy declared under the same name replaces one), and the channels each kind of
target can be reached on. Defaults are DOMAIN.md's ("Warnings and escalation").
"""

from __future__ import annotations

from types import MappingProxyType

from alarms.model import Priority
from alarms.roster import BaoBaoRole, DeskLevel
from alarms.routing_model import Channel, EscalationPlan, Receiver, Step, Target, TargetKind

__all__ = ["BUILTIN_POLICIES", "BUILTIN_RECEIVERS", "CHANNELS_OF"]


_PEOPLE = (Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.CONSOLE)
# the channels each kind of target can be reached on; the first is its default
CHANNELS_OF: dict[TargetKind, tuple[Channel, ...]] = {
    TargetKind.DUTY_ROOM: _PEOPLE,
    TargetKind.BAOBAO: _PEOPLE,
    TargetKind.BUREAU_DESK: _PEOPLE,
    TargetKind.MQTT: (Channel.MQTT,),
    TargetKind.WEBHOOK: (Channel.WEBHOOK,),
    TargetKind.EMAIL: (Channel.EMAIL,),
}
_SMS = (Channel.SMS,)
BUILTIN_RECEIVERS = MappingProxyType(
    {
        "duty_room": Receiver("duty_room", (Target(TargetKind.DUTY_ROOM, _SMS, DeskLevel.ENTERPRISE),)),
        "baobao": Receiver("baobao", (Target(TargetKind.BAOBAO, _SMS, roles=tuple(BaoBaoRole)),)),
        "county_desk": Receiver("county_desk", (Target(TargetKind.BUREAU_DESK, _SMS, DeskLevel.COUNTY),)),
        "city_desk": Receiver("city_desk", (Target(TargetKind.BUREAU_DESK, _SMS, DeskLevel.CITY),)),
    }
)
# "default" (DOMAIN.md): the route's receiver (the enterprise duty room) is told at once, and
# for critical alarms the 包保 trio with it; unacknowledged, critical goes to the county desk
# after 2 min and the city desk after 10 min (DOMAIN.md gives no city timing: a site setting),
# high to the county desk after 5 min; medium and low stay with the enterprise.
# "none": the route's receiver only (machine receivers: MQTT, webhooks).
BUILTIN_POLICIES = MappingProxyType(
    {
        "default": EscalationPlan(
            "default",
            MappingProxyType(
                {
                    Priority.CRITICAL: (
                        Step(0, ("baobao",)),
                        Step(120, ("county_desk",)),
                        Step(600, ("city_desk",)),
                    ),
                    Priority.HIGH: (Step(300, ("county_desk",)),),
                }
            ),
        ),
        "none": EscalationPlan("none", MappingProxyType({})),
    }
)
