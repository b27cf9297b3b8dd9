"""routes.yaml's ``channels``: every provider built at check time from its settings (types, bounds,
credentials from the environment, template variables HazardWatch fills), every problem at its
file:line, a channel a receiver uses that is not configured refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from alarms.channels import compile_channels
from alarms.notify.aliyun_sms import AliyunSms
from alarms.notify.console import ConsoleOutbox
from alarms.notify.email import EmailNotifier
from alarms.notify.mqtt import MqttNotifier
from alarms.notify.webhook import Webhook
from alarms.routing import compile_routes
from alarms.routing_model import Channel
from core.errors import ConfigError

HEAD = """route:
  receiver: people
receivers:
  - name: people
    targets: [{kind: duty_room, channels: [sms, email]}]
  - name: systems
    targets: [{kind: mqtt, address: bureau}, {kind: webhook, address: "https://centre.example/hook"}]
"""
GOOD = (
    HEAD
    + """channels:
  sms:
    provider: aliyun
    sign_name: 危化监测
    template_code: SMS_123456789
    template_params: [enterprise, tag, condition, value, time, action]
    endpoint: http://127.0.0.1:9
    rate_per_s: 5
  email: {host: smtp.example.com, sender: alarms@example.com, username: alarms, local_hostname: hw.example}
  mqtt: {host: 127.0.0.1, port: 1883}
  webhook: {secret_env: HOOK_SECRET}
  console: {path: out.jsonl, echo: false}
"""
)
ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-test-id",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "test-secret-value",
    "HAZARDWATCH_SMTP_PASSWORD": "smtp-password",
    "HOOK_SECRET": "a-webhook-secret-of-32-characters!!",
}


def _compile(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    return compile_channels(path, compile_routes(path), ENV if env is None else env)


def _issues(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _compile(tmp_path, text, env)
    return [str(i) for i in err.value.issues]


def test_every_channel_is_built_from_its_settings(tmp_path: Path) -> None:
    channels = _compile(tmp_path, GOOD)
    n = channels.notifiers  # type: ignore[attr-defined]
    assert isinstance(n[Channel.SMS], AliyunSms) and isinstance(n[Channel.EMAIL], EmailNotifier)
    assert isinstance(n[Channel.MQTT], MqttNotifier) and isinstance(n[Channel.CONSOLE], ConsoleOutbox)
    hook = channels.notifier(Channel.WEBHOOK, "https://centre.example/hook")  # type: ignore[attr-defined]
    assert isinstance(hook, Webhook)
    assert channels.rate_per_s[Channel.SMS] == 5  # type: ignore[attr-defined]
    assert "test-secret-value" not in repr(n[Channel.SMS])


def test_without_a_channels_key_everything_goes_to_the_console(tmp_path: Path) -> None:
    channels = _compile(tmp_path, HEAD)
    assert all(isinstance(x, ConsoleOutbox) for x in channels.notifiers.values())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "line", "fragment"),
    [
        (
            ("provider: aliyun", "provider: huawei"),
            10,
            "unknown provider 'huawei' for sms (known: aliyun, tencent, gsm, console)",
        ),
        (("    rate_per_s: 5", "    rate_per_s: .nan"), 15, "rate_per_s is a number of messages per second"),
        (("    rate_per_s: 5", "    timeout_s: .inf"), 15, "timeout_s must be a number of seconds above 0"),
        (("    rate_per_s: 5", "    timeout_s: '10'"), 15, "timeout_s must be float, got str '10'"),
        (("    rate_per_s: 5", "    colour: red"), 15, "unknown key for aliyun sms"),
        (("    sign_name: 危化监测\n", ""), 9, "sign_name: required key is missing"),
        (("condition, value", "condition, 温度"), 13, "'温度' is not a parameter HazardWatch fills"),
        (("port: 1883", "port: 70000"), 17, "port must be 1 to 65535, got 70000"),
        (("port: 1883", "port: true"), 17, "port must be int, got bool True"),
        (("    rate_per_s: 5", "    after: 1m"), 15, "after is for the voice channel only"),
        (("  console: {path: out.jsonl, echo: false}", "  fax: {}"), 19, "unknown channel 'fax'"),
    ],
)
def test_a_bad_setting_is_named_at_its_line(
    tmp_path: Path, change: tuple[str, str], line: int, fragment: str
) -> None:
    assert change[0] in GOOD
    issues = _issues(tmp_path, GOOD.replace(*change))
    assert any(f"routes.yaml:{line} " in i and fragment in i for i in issues), issues


def test_a_missing_credential_fails_the_check_without_showing_any_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}
    issues = _issues(tmp_path, GOOD, env)
    assert any("ALIBABA_CLOUD_ACCESS_KEY_SECRET" in i for i in issues), issues
    assert not any(v in i for i in issues for v in ENV.values())


def test_a_channel_a_receiver_uses_must_be_configured(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  email: {host: smtp.example.com, sender: alarms@example.com, username: alarms, local_hostname: hw.example}\n",
        "",
    )
    issues = _issues(tmp_path, text)
    assert any("routes.yaml:4 " in i and "receiver 'people' uses channel email" in i for i in issues), issues


def test_a_webhook_address_its_notifier_refuses_fails_the_check_at_the_target(tmp_path: Path) -> None:
    text = GOOD.replace("https://centre.example/hook", "https://bot:s3cr3t@centre.example/hook")
    issues = _issues(tmp_path, text)
    assert any("routes.yaml:7 " in i and "credentials" in i for i in issues), issues
    assert not any("s3cr3t" in i for i in issues)


def test_a_gsm_modem_channel_is_built_and_its_template_checked(tmp_path: Path) -> None:
    gsm = """  sms:
    provider: gsm
    port: /dev/ttyUSB-hazardwatch-test
    text_template: "【{event}】{enterprise} {tag}：{text}"
    template_params: [event, enterprise, tag, text]
"""
    head, _, rest = GOOD.partition("  sms:\n")
    rest = rest[rest.index("  email:") :]
    channels = _compile(tmp_path, head + gsm + rest)
    from alarms.notify.gsm_modem import GsmModem

    assert isinstance(channels.notifiers[Channel.SMS], GsmModem)  # type: ignore[attr-defined]
    bad = head + gsm.replace("{tag}", "{位号}") + rest
    assert any("routes.yaml:" in i for i in _issues(tmp_path, bad))
