"""The GSM channel's text template: placeholders checked against the declared parameters, the worst-case
length against max_parts (70 UTF-16 units alone, 67 a part), values checked when a message is rendered."""

from __future__ import annotations

import pytest

from alarms.notify import Message, NotifierConfigError, PermanentError
from alarms.notify.gsm_text import TextTemplate

NAMES = ("event", "enterprise", "alarm")


def template(
    text: str = "【{event}】{enterprise}：{alarm}", max_param_chars: int = 40, max_parts: int = 4
) -> TextTemplate:
    return TextTemplate("gsm", text, NAMES, max_param_chars, max_parts)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"text": "{enterprise} {level}"}, "{level} is not one of template_params"),
        ({"text": "{enterprise!r}"}, "takes no format spec or conversion"),
        ({"text": "{enterprise:>10}"}, "takes no format spec or conversion"),
        ({"text": "{0}"}, "{0} is not one of template_params"),
        ({"text": "{enterprise"}, "literal brace"),
        ({"max_param_chars": 100}, "lower max_param_chars or raise max_parts"),
        ({"max_parts": 0}, "max_parts must be 1..255"),
        ({"text": "{alarm}", "max_param_chars": 71, "max_parts": 1}, "71 characters"),
        ({"text": "{alarm}{alarm}", "max_param_chars": 68, "max_parts": 2}, "136 characters"),
    ],
)
def test_config_errors(settings: dict[str, object], needle: str) -> None:
    with pytest.raises(NotifierConfigError) as exc_info:
        template(**settings)  # type: ignore[arg-type]
    assert needle in str(exc_info.value)


def test_the_worst_case_may_fill_the_parts_exactly() -> None:
    assert template("{alarm}", 70, 1).max_parts == 1
    assert template("{alarm}{{}}", 65, 1).text == "{alarm}{{}}"  # a doubled brace is one literal character
    assert (
        template("【{event}】{enterprise}：{alarm}", 87, 4).max_param_chars == 87
    )  # 3 + 3 * 87 = 264 <= 268


def test_render_fills_and_checks_the_parameters() -> None:
    t = template()
    params = {"event": "报警", "enterprise": "某某化工", "alarm": "液位高高"}
    assert t.render(Message("13912345678", tuple(params.items()), "k")) == "【报警】某某化工：液位高高"
    for bad, needle in [
        ({"alarm": ""}, "'alarm' is empty"),
        ({"alarm": "罐" * 41}, "at most 40"),
        ({"x": "1"}, "'x'"),
    ]:
        with pytest.raises(PermanentError, match=needle):
            t.render(Message("13912345678", tuple({**params, **bad}.items()), "k"))
