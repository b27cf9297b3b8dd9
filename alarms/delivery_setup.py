"""What the dispatcher needs from the configuration, compiled once, at ``check`` and at start:
routes.yaml (route tree and channels, every notifier built) and rosters.yaml beside the plant.

No routes.yaml: no notification (``check`` says so). A routes.yaml without rosters.yaml: duty
rooms and bureau desks reach nobody, 包保 still reach the plant's trio (``check`` lists it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alarms.channels import Channels, compile_channels
from alarms.roster import Rosters
from alarms.roster_load import FILE_NAME as ROSTERS_FILE
from alarms.roster_load import load_rosters
from alarms.routing import compile_routes, routes_file
from alarms.routing_model import RouteTree, gas_classes
from core.errors import ConfigError, ConfigIssue
from core.plant import Plant

__all__ = ["DeliverySetup", "load_delivery"]


@dataclass(frozen=True)
class DeliverySetup:
    tree: RouteTree
    channels: Channels
    rosters: Rosters
    gas: Mapping[str, str]
    routes_path: Path
    rosters_path: Path | None

    def summary(self) -> str:
        notifiers = ", ".join(f"{ch.value}: {n!r}" for ch, n in sorted(self.channels.notifiers.items()))
        return (
            f"routes: {len(self.tree.routes())} routes, {len(self.tree.receivers)} receivers, "
            f"{len(self.tree.escalations)} escalation policies; rosters: "
            f"{len(self.rosters.desks()) if self.rosters_path else 'none (duty desks reach nobody)'}"
            f"{' desks' if self.rosters_path else ''}; channels: {notifiers}"
        )


def load_delivery(
    config: str | Path, plant: Plant, env: Mapping[str, str] | None = None
) -> DeliverySetup | None:
    """The delivery setup beside the plant at ``config``; None without a routes.yaml. ConfigError
    listing the problems of all three parts (routes, channels, rosters) at their file:line."""
    path = routes_file(config)
    if not path.is_file():
        return None
    issues: list[ConfigIssue] = []
    tree = channels = rosters = None
    try:
        tree = compile_routes(path)
    except ConfigError as exc:
        issues += exc.issues
    if tree is not None:
        try:
            channels = compile_channels(path, tree, env)
        except ConfigError as exc:
            issues += exc.issues
    rosters_path: Path | None = path.parent / ROSTERS_FILE
    try:
        if rosters_path is not None and rosters_path.is_file():
            rosters = load_rosters(rosters_path, plant)
        else:
            rosters_path, rosters = None, Rosters({}, plant)
    except ConfigError as exc:
        issues += exc.issues
    if issues or tree is None or channels is None or rosters is None:
        raise ConfigError(issues)
    return DeliverySetup(tree, channels, rosters, gas_classes(plant), path, rosters_path)
