"""The GSM modem channel's SMS text: ``text_template`` filled from a message's parameters. Checked at
construction: every placeholder is a declared parameter, and the text with every parameter at its longest
fits in ``max_parts`` SMS parts, so that a send never fails for length with Chinese text."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from alarms.notify import Message, NotifierConfigError
from alarms.notify.pdu import MAX_PARTS, PART_UNITS, SINGLE_UNITS
from alarms.notify.sms import SmsTemplate

__all__ = ["TextTemplate"]


@dataclass(frozen=True)
class TextTemplate:
    provider: str
    text: str  # str.format placeholders, e.g. "【{event}】{enterprise}：{alarm}"; "{{" for a literal brace
    names: tuple[str, ...]  # the messages' parameters, in order
    max_param_chars: int
    max_parts: int
    params: SmsTemplate = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", SmsTemplate(self.provider, self.names, self.max_param_chars))
        fail = f"{self.provider}: text_template"
        try:
            fields = [f for f in string.Formatter().parse(self.text) if f[1] is not None]
        except ValueError as exc:
            raise NotifierConfigError(f"{fail}: {exc} (write {{{{ for a literal brace)") from None
        for _, name, spec, conversion in fields:
            if spec or conversion:
                raise NotifierConfigError(f"{fail}: {{{name}}} takes no format spec or conversion")
            if name not in self.names:
                raise NotifierConfigError(f"{fail}: {{{name}}} is not one of template_params {self.names}")
        if not 1 <= self.max_parts <= MAX_PARTS:
            raise NotifierConfigError(f"{self.provider}: max_parts must be 1..{MAX_PARTS}")
        literal = len(self.text.format_map(dict.fromkeys(self.names, "")).encode("utf-16-be")) // 2
        worst = literal + len(fields) * self.max_param_chars
        room = SINGLE_UNITS if self.max_parts == 1 else self.max_parts * PART_UNITS
        if worst > room:
            raise NotifierConfigError(
                f"{fail}: {worst} characters with every parameter at max_param_chars, {self.max_parts} "
                f"parts hold {room}: lower max_param_chars or raise max_parts"
            )

    def render(self, message: Message) -> str:
        """The text for ``message``; PermanentError (TEMPLATE_PARAM) naming a missing, empty, too long
        or unknown parameter."""
        return self.text.format_map(dict(zip(self.names, self.params.values(message), strict=True)))
