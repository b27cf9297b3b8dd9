"""routes.yaml's ``channels``: which provider carries each channel, built into notifiers at start.

```yaml
channels:
  sms:     {provider: aliyun, sign_name: 危化监测, template_code: SMS_1, template_params: [enterprise, tag, value]}
  voice:   {provider: tencent, ..., after: 1m}
  mqtt:    {host: 127.0.0.1, port: 1883}
  webhook: {secret_env: HAZARDWATCH_WEBHOOK_SECRET}
  console: {path: var/notifications.jsonl, echo: true}
```

Each channel names a ``provider`` (``console`` is a provider of every channel: the demo's and an
air-gapped test bench's) and the provider's settings, which are its config dataclass's fields
(docs/configuration.md lists them). ``compile_channels`` builds every notifier, so credentials
missing from the environment, an unknown or missing setting and a template variable that is not
one of the standard parameters (alarms.delivery_text.STANDARD) are errors at ``check`` with the
file:line of the setting, never at the first alarm. Shared settings, beside the provider's:
``rate_per_s`` (messages per second at the provider, default 20) and, for voice, ``after``
(the call follows the SMS step by this long, default 1m, so an acknowledged alarm wakes nobody).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alarms.delivery_text import STANDARD
from alarms.notify import Notifier, NotifierConfigError
from alarms.routing_model import Channel, RouteTree
from alarms.routing_schema import Checker, parse_duration
from core.errors import ConfigError
from core.yaml_loader import PathKey, load_document

__all__ = ["Channels", "compile_channels"]

# provider -> (module, config class, notifier class) per channel; imported only when used
_PROVIDERS: dict[Channel, dict[str, tuple[str, str, str]]] = {
    Channel.SMS: {
        "aliyun": ("alarms.notify.aliyun_sms", "AliyunSmsConfig", "AliyunSms"),
        "tencent": ("alarms.notify.tencent_sms", "TencentSmsConfig", "TencentSms"),
        "gsm": ("alarms.notify.gsm_modem", "GsmModemConfig", "GsmModem"),
    },
    Channel.VOICE: {
        "aliyun": ("alarms.notify.aliyun_voice", "AliyunVoiceConfig", "AliyunVoice"),
        "tencent": ("alarms.notify.tencent_voice", "TencentVoiceConfig", "TencentVoice"),
    },
    Channel.MQTT: {"mqtt": ("alarms.notify.mqtt", "MqttConfig", "MqttNotifier")},
    Channel.WEBHOOK: {"webhook": ("alarms.notify.webhook", "WebhookConfig", "Webhook")},
    Channel.EMAIL: {"smtp": ("alarms.notify.email", "EmailConfig", "EmailNotifier")},
    Channel.CONSOLE: {},
}
_DEFAULT_PROVIDER = {
    Channel.MQTT: "mqtt", Channel.WEBHOOK: "webhook", Channel.EMAIL: "smtp", Channel.CONSOLE: "console"
}  # fmt: skip
_SHARED = ("provider", "rate_per_s", "after")


@dataclass
class Channels:
    """The notifiers of one routes.yaml. ``notifier(channel, recipient)``: the webhook channel has
    one notifier per URL (the recipient), built on first use from the same settings."""

    notifiers: dict[Channel, Notifier] = field(default_factory=dict)
    rate_per_s: dict[Channel, float] = field(default_factory=dict)
    voice_after_s: int = 60
    _webhook: Callable[[str], Notifier] | None = None
    _webhooks: dict[str, Notifier] = field(default_factory=dict)

    def notifier(self, channel: Channel, recipient: str) -> Notifier | None:
        if channel == Channel.WEBHOOK and self._webhook is not None:
            if recipient not in self._webhooks:
                self._webhooks[recipient] = self._webhook(recipient)
            return self._webhooks[recipient]
        return self.notifiers.get(channel)

    def all(self) -> list[Notifier]:
        return [*self.notifiers.values(), *self._webhooks.values()]


def _console(settings: Mapping[str, Any], base: Path) -> Notifier:
    from alarms.notify.console import ConsoleOutbox

    path = settings.get("path")
    return ConsoleOutbox((base / str(path)) if path else None, echo=bool(settings.get("echo", path is None)))


def _build(
    c: Checker, channel: Channel, raw: Any, at: PathKey, base: Path, env: Mapping[str, str] | None
) -> tuple[Callable[[str | None], Notifier] | None, float, int]:
    """(a builder of the channel's notifier for a recipient URL or None, rate, voice after)."""
    if not isinstance(raw, dict):
        c.issue(at, "a channel is a mapping: {provider: ..., settings}")
        return None, 0.0, 0
    providers = _PROVIDERS[channel]
    provider = raw.get("provider", _DEFAULT_PROVIDER.get(channel, ""))
    if provider != "console" and provider not in providers:
        known = ", ".join([*providers, "console"])
        c.issue((*at, "provider"), f"unknown provider {provider!r} for {channel.value} (known: {known})")
        return None, 0.0, 0
    rate = raw.get("rate_per_s", 20)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.01 <= rate <= 10_000:
        c.issue((*at, "rate_per_s"), "rate_per_s is a number of messages per second, 0.01 to 10000")
        rate = 20
    after = 60
    if "after" in raw:
        if channel != Channel.VOICE:
            c.issue((*at, "after"), "after is for the voice channel only")
        else:
            try:
                after = parse_duration(raw["after"])
            except ValueError as exc:
                c.issue((*at, "after"), str(exc))
    settings = {k: v for k, v in raw.items() if k not in _SHARED}
    if provider == "console":
        unknown = set(settings) - {"path", "echo"}
        for k in sorted(unknown):
            c.issue((*at, k), "unknown key (console takes path and echo)")
        return (None if unknown else lambda _url: _console(settings, base)), float(rate), after
    module_name, config_name, notifier_name = providers[provider]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an install without the provider's library
        c.issue((*at, "provider"), f"{provider} {channel.value} cannot be loaded: {exc}")
        return None, float(rate), after
    config_cls, notifier_cls = getattr(module, config_name), getattr(module, notifier_name)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    ok = True
    for k in settings:
        if k not in fields:
            c.issue((*at, k), f"unknown key for {provider} {channel.value} (keys: {', '.join(fields)})")
            ok = False
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in settings and not (channel == Channel.WEBHOOK and name == "url"):
            c.issue(at, f"{name}: required key is missing")
            ok = False
    hints = typing.get_type_hints(config_cls)
    for k, v in list(settings.items()):
        if k in fields:
            problem = _type_problem(k, v, hints[k])
            if problem:
                c.issue((*at, k), problem)
                ok = False
            elif isinstance(v, list):
                settings[k] = tuple(v)
    names = settings.get("template_params")
    for i, name in enumerate(names or ()):
        if name not in STANDARD:
            c.issue(
                (*at, "template_params", i),
                f"{name!r} is not a parameter HazardWatch fills (parameters: {', '.join(STANDARD)})",
            )
            ok = False
    if not ok:
        return None, float(rate), after

    def build(url: str | None) -> Notifier:
        given = {**settings, **({"url": url} if url is not None else {})}
        return notifier_cls(config_cls(**given), env=env)

    probe = "https://webhook.invalid/" if channel == Channel.WEBHOOK else None
    try:
        build(probe)  # credentials and every setting checked now, not at the first alarm
    except (NotifierConfigError, TypeError, ValueError) as exc:
        c.issue(at, str(exc))
        return None, float(rate), after
    return build, float(rate), after


_LIMITS = {"port": (1, 65535), "max_payload_bytes": (1, 268_435_455)}  # other integers: 0 to 1e6
_MAX_SECONDS = 3600.0  # a setting in seconds (…_s) is finite and in (0, this]


def _type_problem(key: str, value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for a setting annotated ``hint`` (None: nothing): YAML types
    are checked here because the providers' config dataclasses do not check them."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        return None if type(None) in options else f"{key} must have a value"
    for t in options:
        if t is bool and isinstance(value, bool):
            return None
        if t is str and isinstance(value, str):
            return None
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            low, high = _LIMITS.get(key, (0, 1_000_000))
            return None if low <= value <= high else f"{key} must be {low} to {high}, got {value}"
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or not 0 < value <= _MAX_SECONDS:
                return (
                    f"{key} must be a number of seconds above 0 and at most {_MAX_SECONDS:g}, got {value!r}"
                )
            return None
        if typing.get_origin(t) is tuple and isinstance(value, list):
            if all(isinstance(x, str) for x in value):
                return None
            return f"{key} is a list of names"
    wanted = " or ".join(getattr(t, "__name__", str(t)) for t in options if t is not type(None))
    return f"{key} must be {wanted}, got {type(value).__name__} {value!r}"


def compile_channels(path: str | Path, tree: RouteTree, env: Mapping[str, str] | None = None) -> Channels:
    """The channels of one routes.yaml, every notifier built; ConfigError listing every problem,
    including a channel a receiver uses that is not configured."""
    loaded = load_document(path)
    c = Checker(loaded.source)
    doc = loaded.data if isinstance(loaded.data, dict) else {}
    raw = doc.get("channels", {})
    out = Channels()
    if not isinstance(raw, dict):
        c.issue(("channels",), "channels maps a channel (sms, voice, ...) to its provider settings")
        raw = {}
    base = Path()  # a console path is relative to the working directory, as the data directory is
    for name, settings in raw.items():
        at: PathKey = ("channels", name)
        try:
            channel = Channel(name)
        except ValueError:
            c.issue(at, f"unknown channel {name!r} (channels: {', '.join(Channel)})")
            continue
        build, rate, after = _build(c, channel, settings, at, base, env)
        out.rate_per_s[channel] = rate
        if channel == Channel.VOICE:
            out.voice_after_s = after
        if build is None:
            continue
        if channel == Channel.WEBHOOK:
            out._webhook = build
        else:
            out.notifiers[channel] = build(None)
    used = {(ch, r.name) for r in tree.receivers.values() for t in r.targets for ch in t.channels}
    if "channels" not in doc:  # none configured: everything to the console (``check`` says so)
        for ch, _ in used:
            out.notifiers.setdefault(ch, _console({}, base))
    for ch, receiver in sorted(used):
        if ch not in raw and ch != Channel.CONSOLE and "channels" in doc:
            where = (
                next(
                    i
                    for i, r in enumerate(doc.get("receivers") or [])
                    if isinstance(r, dict) and r.get("name") == receiver
                )
                if _declared(doc, receiver)
                else None
            )
            c.issue(
                ("receivers", where) if where is not None else ("channels",),
                f"receiver {receiver!r} uses channel {ch.value}, which channels does not configure",
            )
    if out._webhook is not None:  # every webhook target's URL built now, as a send would build it
        for i, r in enumerate(doc.get("receivers") or []):
            targets = r.get("targets") if isinstance(r, dict) else None
            for j, t in enumerate(targets if isinstance(targets, list) else []):
                if isinstance(t, dict) and t.get("kind") == "webhook" and isinstance(t.get("address"), str):
                    try:
                        out.notifier(Channel.WEBHOOK, t["address"])
                    except (NotifierConfigError, ValueError) as exc:
                        c.issue(("receivers", i, "targets", j, "address"), str(exc))
    if Channel.CONSOLE not in out.notifiers and Channel.CONSOLE not in raw:
        out.notifiers[Channel.CONSOLE] = _console({}, base)
    if c.issues:
        raise ConfigError(c.issues)
    return out


def _declared(doc: Mapping[str, Any], receiver: str) -> bool:
    return any(isinstance(r, dict) and r.get("name") == receiver for r in doc.get("receivers") or [])
