"""The plant of bench/notify.py and its two child processes: the simulator serving it over Modbus TCP,
with the probe raises it is told to make, and a loopback Aliyun SMS gateway that stamps what it gets.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on the machine), so the
parent can subtract a child's stamps from its own. A child stops on command, when its parent goes away,
or after ``LIFETIME_S`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qsl

from core.plant import Plant

__all__ = ["HOLD_S", "PROBES", "PROBE_H", "PROBE_POLL_S", "TICK_S", "Child", "Record", "bench_plant", "phone"]

PROBES = 8
TICK_S = 0.25  # a raise every tick, the probes in turn
HOLD_S = 1.0  # a probe stays past H this long
PROBE_POLL_S = 0.1
PROBE_H = 150.0
PROBE_QUIET = 50.0
LIFETIME_S = 600.0
Record = tuple[int, float, float]  # (probe, value or NaN: not known at that stage, monotonic time)


def phone(k: int) -> str:
    return f"139100000{k:02d}"


def bench_plant(n_bg: int, bg_port: int = 502, probe_port: int = 503) -> Plant:
    """Enterprise BG: ``n_bg`` INT16 tags (scaled: the noise moves every one) on device BG (1 s polls,
    one register each: 80 reads of 125 per 10,000), normal values mid-way below
    their limits; enterprises P0..: one LEVEL tag ``P<k>.V.LT`` each (H ``PROBE_H``), unit k + 1 (device
    PR<k>) of one server (``PROBE_POLL_S`` polls)."""
    kinds = [("TEMPERATURE", "°C", [0, 200], {"h": 180, "hh": 190}), ("PRESSURE", "MPa", [0, 4], {"h": 3.6, "hh": 3.8}),
             ("FLOW", "m³/h", [0, 500], {"h": 450, "hh": 475})]  # fmt: skip
    tags: list[dict[str, Any]] = []
    equipment = []
    for i in range(n_bg):
        eq = f"E{i // 50:04d}"
        if i % 50 == 0:
            equipment.append({"code": eq, "name": eq})
        kind, unit, rng, limits = kinds[i % 3]
        tags.append({"code": f"T{i}", "name": f"T{i}", "equipment": eq, "kind": kind, "unit": unit, "range": rng,
                     "limits": limits, "key": f"BG.{eq}.T{i}",
                     "source": {"device": "BG", "table": "HOLDING", "address": i, "type": "INT16",
                                "scale": {"raw": [0, 32000]}}})  # fmt: skip

    def enterprise(
        code: str, device: dict[str, Any], eqs: list[dict[str, str]], ts: list[dict[str, Any]]
    ) -> Any:
        hs = {"code": "H", "name": "h", "kind": "STORAGE", "grade": 1,
              "units": [{"code": "U", "name": "u", "equipment": eqs}], "tags": ts}  # fmt: skip
        return {"code": code, "name": code, "county": "x", "devices": [device], "hazard_sources": [hs]}

    bg = {
        "protocol": "MODBUS",
        "id": "BG",
        "host": "127.0.0.1",
        "port": bg_port,
        "poll_interval_s": 1.0,
        "timeout_s": 5.0,
    }
    ents = [enterprise("BG", bg, equipment, tags)]
    for k in range(PROBES):
        dev = {"protocol": "MODBUS", "id": f"PR{k}", "host": "127.0.0.1", "port": probe_port, "unit_id": k + 1,
               "poll_interval_s": PROBE_POLL_S}  # fmt: skip
        tag = {"code": "LT", "name": "LT", "equipment": "V", "kind": "LEVEL", "unit": "m", "range": [0, 1000],
               "limits": {"h": PROBE_H, "on_delay_s": 0}, "key": f"P{k}.V.LT",
               "source": {"device": f"PR{k}", "table": "HOLDING", "address": 0, "type": "FLOAT32"}}  # fmt: skip
        ents.append(enterprise(f"P{k}", dev, [{"code": "V", "name": "V"}], [tag]))
    return Plant.model_validate({"enterprises": ents})


async def _simulate(n_bg: int, conn: Connection, parent: int) -> None:
    """The simulator: every tick a step (background values change), probes on command."""
    from simulators.runner import Simulator

    plant = bench_plant(n_bg)
    sim = Simulator(plant, seed=1, free_ports=True, autostep=False, opcua=False)
    await sim.start()
    try:
        conn.send((sim.modbus_address("BG")[1], sim.modbus_address("PR0")[1]))
        keys = [f"P{k}.V.LT" for k in range(PROBES)]
        for key in keys:
            sim.set_value(key, PROBE_QUIET, hold=True)
        raised = [0] * PROBES  # raises per probe: the value of the next one
        deadline = time.monotonic() + LIFETIME_S
        window_end, tick = 0.0, 0
        out: list[Record] = []
        clear_at: list[tuple[float, str]] = []
        next_tick = time.monotonic()
        while time.monotonic() < deadline and os.getppid() == parent:
            if conn.poll():
                cmd = conn.recv()
                if cmd[0] != "window":
                    break
                window_end, out = time.monotonic() + cmd[1], []
            now = time.monotonic()
            while clear_at and clear_at[0][0] <= now:
                sim.set_value(clear_at.pop(0)[1], PROBE_QUIET, hold=True)
            probe = None
            if now < window_end:
                k = tick % PROBES
                tick += 1
                value = 200.0 + 10.0 * (raised[k] % 79)  # unique within a level (≤ 79 raises a probe)
                raised[k] += 1
                sim.set_value(keys[k], value, hold=True)
                clear_at.append((now + HOLD_S, keys[k]))
                probe = (k, value)
            await sim.step(dt=TICK_S)  # every value changes; the Modbus registers are set here
            if probe is not None:
                out.append((*probe, time.monotonic()))
            if window_end and now >= window_end and not clear_at:
                conn.send(out)
                window_end = 0.0
            next_tick += TICK_S
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        await sim.stop()


async def _gateway(conn: Connection, parent: int) -> None:
    """A loopback Dysmsapi. SendSms: accepted, kept as (arrival, action, phone, TemplateParam, OutId).
    QuerySendDetails: the records of what it accepted for the number (delivered), as Aliyun would
    answer the dispatcher's lookup after a send it could not confirm; kept too, to be counted."""
    got: list[tuple[float, str, str, str, str]] = []
    accepted: dict[str, list[str]] = {}  # phone -> OutIds
    biz = [0]

    def answer(action: str, query: dict[str, str]) -> dict[str, Any]:
        biz[0] += 1
        if action != "QuerySendDetails":
            accepted.setdefault(query.get("PhoneNumbers", ""), []).append(query.get("OutId", ""))
            return {"Code": "OK", "Message": "OK", "BizId": f"bench{biz[0]}", "RequestId": f"r{biz[0]}"}
        records = [{"OutId": key, "SendStatus": 3, "ErrCode": "DELIVERED", "PhoneNum": query.get("PhoneNumber")}
                   for key in accepted.get(query.get("PhoneNumber", ""), [])]  # fmt: skip
        return {"Code": "OK", "Message": "OK", "RequestId": f"r{biz[0]}", "TotalCount": len(records),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": records}}  # fmt: skip

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = time.monotonic()
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                query = dict(parse_qsl(lines[0].split(" ")[1].partition("?")[2], keep_blank_values=True))
                action = headers.get("x-acs-action", "")
                phone = query.get("PhoneNumbers") or query.get("PhoneNumber", "")
                kept = action + ("/report" if query.get("BizId") else "")  # a delivery receipt, not a lookup
                got.append((at, kept, phone, query.get("TemplateParam", "{}"), query.get("OutId", "")))
                body = json.dumps(answer(action, query))
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             f"{len(body)}\r\n\r\n{body}".encode())  # fmt: skip
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    conn.send(server.sockets[0].getsockname()[1])
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline and os.getppid() == parent:
        if not conn.poll():
            await asyncio.sleep(0.02)
            continue
        if conn.recv()[0] != "dump":
            break
        conn.send(got[:])
        got.clear()
    server.close()


def _child(kind: str, arg: int, conn: Connection, parent: int) -> None:
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        asyncio.run(_simulate(arg, conn, parent) if kind == "sim" else _gateway(conn, parent))


class Child:
    """A child process on a pipe; always stopped (command, then terminate, then kill)."""

    def __init__(self, kind: str, arg: int = 0) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(kind, arg, child, os.getpid()), daemon=True,
                                name=f"bench-notify-{kind}")  # fmt: skip

    def start(self) -> Any:
        self.proc.start()
        if not self.conn.poll(120):
            self.close()
            raise RuntimeError(f"{self.proc.name} did not start within 120 s")
        return self.conn.recv()

    async def ask(self, cmd: tuple[Any, ...], timeout_s: float) -> Any:
        self.conn.send(cmd)
        if not await asyncio.to_thread(self.conn.poll, timeout_s):
            raise RuntimeError(f"{self.proc.name} did not answer {cmd[0]} within {timeout_s:.0f} s")
        return self.conn.recv()

    def close(self) -> None:
        if self.proc.pid is None:  # never started
            self.conn.close()
            return
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()
