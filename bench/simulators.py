"""Benchmark: the simulator serving 5,000 OPC UA nodes and 10,000 Modbus registers at 1 Hz.

``main()`` returns the markdown section for docs/performance.md (the bench harness writes
it between ``<!-- bench:simulators -->`` markers). One process, one event loop: the step
cost (models + faults + SIS + Modbus encode + OPC UA publish of every changed node) is the
share of a core the 1 Hz simulator needs; a client reads everything back to prove it is
served.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from bench.report import spread
from core.plant import Plant
from simulators.runner import Simulator

OPCUA_NODES = 5000
MODBUS_TAGS = 5000  # FLOAT32: 10,000 registers
PER_EQUIPMENT = 50
STEPS = 20
RUNS = 5


def synthetic_plant(n_opc: int = OPCUA_NODES, n_mb: int = MODBUS_TAGS) -> Plant:
    kinds = [("TEMPERATURE", "°C", [0, 200]), ("PRESSURE", "MPa", [0, 4]), ("FLOW", "m³/h", [0, 500])]
    tags: list[dict[str, Any]] = []
    equipment = []
    for i in range(n_opc + n_mb):
        eq = f"E{i // PER_EQUIPMENT:04d}"
        if i % PER_EQUIPMENT == 0:
            equipment.append({"code": eq, "name": eq})
        kind, unit, rng = kinds[i % 3]
        src: dict[str, Any] = (
            {"device": "OPC", "node": f"s=T{i}", "namespace_uri": "urn:bench"}
            if i < n_opc
            else {"device": "MB", "table": "HOLDING", "address": 2 * (i - n_opc), "type": "FLOAT32"}
        )
        code = f"T{i}"
        tags.append({"code": code, "name": code, "equipment": eq, "kind": kind, "unit": unit, "range": rng,
                     "resolution": 0.001, "source": src, "key": f"B.{eq}.{code}"})  # fmt: skip
    return Plant.model_validate(
        {
            "enterprises": [
                {
                    "code": "B",
                    "name": "bench",
                    "county": "x",
                    "devices": [
                        {"protocol": "OPCUA", "id": "OPC", "endpoint": "opc.tcp://127.0.0.1:4840"},
                        {"protocol": "MODBUS", "id": "MB", "host": "127.0.0.1", "port": 502},
                    ],
                    "hazard_sources": [
                        {
                            "code": "H",
                            "name": "h",
                            "kind": "STORAGE",
                            "grade": 1,
                            "units": [{"code": "U", "name": "u", "equipment": equipment}],
                            "tags": tags,
                        }
                    ],
                }
            ]
        }
    )


class _Count:
    n = 0

    def datachange_notification(self, node: object, val: object, data: object) -> None:
        self.n += 1


async def _run() -> dict[str, float]:
    plant = synthetic_plant()
    out: dict[str, float] = {}
    t = time.perf_counter()
    sim = Simulator(plant, seed=1, free_ports=True, autostep=False)
    await sim.start()
    out["start_s"] = time.perf_counter() - t
    try:
        async with Client(sim.opcua_endpoint("OPC")) as client:
            ns = await client.get_namespace_index("urn:bench")
            nodes = [client.get_node(f"ns={ns};s=T{i}") for i in range(OPCUA_NODES)]
            sub = await client.create_subscription(1000, _Count())
            await sub.subscribe_data_change(nodes[:1000], queuesize=1)
            costs: list[float] = []
            for _ in range(STEPS):
                t = time.perf_counter()
                await sim.step()
                costs.append(time.perf_counter() - t)
                await asyncio.sleep(0.05)
            out["step_p50_ms"] = statistics.median(costs) * 1e3
            out["step_max_ms"] = max(costs) * 1e3
            t = time.perf_counter()
            for k in range(0, OPCUA_NODES, 1000):
                await client.read_values(nodes[k : k + 1000])
            out["opcua_read_all_s"] = time.perf_counter() - t
        host, port = sim.modbus_address("MB")
        mb = AsyncModbusTcpClient(host, port=port, timeout=5, retries=0)
        await mb.connect()
        t = time.perf_counter()
        for a in range(0, 2 * MODBUS_TAGS, 125):
            rr = await mb.read_holding_registers(a, count=min(125, 2 * MODBUS_TAGS - a), slave=1)
            assert not rr.isError()
        out["modbus_read_all_s"] = time.perf_counter() - t
        mb.close()
    finally:
        await sim.stop()
    return out


def main() -> str:
    runs = [asyncio.run(_run()) for _ in range(RUNS)]

    def col(key: str, scale: float = 1.0) -> list[float]:
        return [r[key] * scale for r in runs]

    shares = col("step_p50_ms", 1e-3)
    worst_share = max(shares)
    return "\n".join(
        [
            "## Simulator (bench/simulators.py)",
            "",
            f"{OPCUA_NODES:,} OPC UA nodes (AnalogItemType + EURange/EngineeringUnits, 1,000 of them subscribed "
            f"by a client) and {2 * MODBUS_TAGS:,} Modbus holding registers ({MODBUS_TAGS:,} FLOAT32 tags), "
            f"every value changing every step, one process, one event loop. {RUNS} runs, each with a new "
            "simulator; every figure is median (min–max) over the runs.",
            "",
            "| measure | result |",
            "|---|---|",
            f"| start (build both servers) | {spread(col('start_s'), '{:.1f}', ' s')} |",
            "| one 1 Hz step: models + faults + SIS + Modbus encode + OPC UA publish, p50 | "
            f"{spread(col('step_p50_ms'), '{:.0f}', ' ms')} |",
            f"| same, worst of {STEPS} steps | {spread(col('step_max_ms'), '{:.0f}', ' ms')} |",
            f"| share of one core at 1 Hz (p50 step) | {spread([x * 100 for x in shares], '{:.0f}', ' %')} |",
            "| client read-back of all OPC UA nodes (read_values, 1,000 per request) | "
            f"{spread(col('opcua_read_all_s'), '{:.2f}', ' s')} |",
            "| client read-back of all Modbus registers (125 per request) | "
            f"{spread(col('modbus_read_all_s'), '{:.2f}', ' s')} |",
            "",
            "Target: at least 5,000 OPC UA nodes and 10,000 registers changing at 1 Hz on one core: "
            f"{'met' if worst_share < 1.0 else 'NOT met'} (judged on the worst run's p50 step).",
        ]
    )


if __name__ == "__main__":
    print(main())
