"""A private Mosquitto broker for tests: its own process on a free loopback port with a config in a temp
directory (never the system broker on :1883), persistence on, so a test can kill and restart it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


class Mosquitto:
    """``extra`` config lines (acl_file, password_file, max_packet_size, ...) are added after the listener."""

    def __init__(self, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "user root" if os.geteuid() == 0 else "",  # as root it drops to "mosquitto": no access to tmp
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir}/mosquitto.log",
            *self.extra,
        ]
        if not any(line.startswith("allow_anonymous") for line in self.extra):
            lines.append("allow_anonymous true")
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 5.0) -> None:
        assert self.process is None, "already running"
        self.write_config()
        with (self.workdir / "stderr.log").open("ab") as stderr:  # "should not be run as root" and such
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdin=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM saves the persistence file (queued QoS 1 messages, retained ones); SIGKILL does not."""
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(5)
            self.process = None

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()
