"""The notification dispatcher alone, as ``hazardwatch run`` starts it, for kill tests.

``python -m tests.e2e.dispatch_driver --config-dir DIR --dsn DSN`` builds the delivery setup of
DIR (its routes.yaml with the channels, its rosters.yaml; credentials from the environment, as
``load_delivery`` reads them at start) for the demo plant and runs ``Dispatcher.run`` on the real
clock until it is killed; SIGTERM stops it cleanly. "dispatching" on stdout: the setup compiled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from alarms.delivery_setup import load_delivery
from alarms.dispatcher import Dispatcher
from alarms.model import Catalog
from core.clock import SystemClock
from core.config import load_plant
from rules.compile import compile_rules

PLANT = Path(__file__).resolve().parents[2] / "config" / "demo" / "plant.yaml"


async def run(config_dir: Path, dsn: str) -> int:
    plant = load_plant(PLANT)
    setup = load_delivery(config_dir, plant, os.environ)
    if setup is None:
        print(f"no routes.yaml in {config_dir}", file=sys.stderr, flush=True)
        return 2
    dispatcher = Dispatcher(
        dsn, setup.tree, setup.channels, setup.rosters, plant, setup.gas,
        Catalog(plant, compile_rules(plant)).by_key, SystemClock(), registry=None,
    )  # fmt: skip
    task = asyncio.create_task(dispatcher.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print("dispatching", flush=True)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await dispatcher.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.dispatch_driver", description=__doc__)
    p.add_argument("--config-dir", type=Path, required=True)
    p.add_argument("--dsn", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(a.config_dir, a.dsn))


if __name__ == "__main__":
    sys.exit(main())
