"""A real worker process (`faust -A app.main worker`), started and watched from a test."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.cli.devbroker import free_port

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(self, bootstrap: str, app_id: str, prefix: str, workdir: Path, name: str,
                 partitions: int = 4, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = workdir / f"{name}-data"
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRIGGERS_APP_ID": app_id,
            "TRIGGERS_TOPIC_PREFIX": prefix,
            "TRIGGERS_PARTITIONS": str(partitions),
            "TRIGGERS_DATA_DIR": str(self.data_dir),
            "TRIGGERS_WEB_PORT": str(self.port),
            "TRIGGERS_WEB_HOST": "127.0.0.1",
            # Fast group joins on the test broker.
            "TRIGGERS_SESSION_TIMEOUT_S": "6",
            "TRIGGERS_REBALANCE_TIMEOUT_S": "6",
            "TRIGGERS_HEARTBEAT_INTERVAL_S": "0.5",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "app.main", "worker", "-l", "info"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def health(self) -> dict[str, Any] | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(f"{self.url}/health")
                return response.json() if response.status_code == 200 else None
        except httpx.HTTPError:
            return None

    async def wait_for(self, predicate: Any, timeout: float = 90.0, what: str = "healthy") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log_tail()}")
            report = await self.health()
            if report is not None and predicate(report):
                return report
            await asyncio.sleep(0.25)
        raise AssertionError(f"worker {self.name} not {what} in {timeout}s; last health "
                             f"{await self.health()}\n{self.log_tail()}")

    async def wait_healthy(self, timeout: float = 90.0) -> dict[str, Any]:
        return await self.wait_for(lambda r: r["status"] == "ok", timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """No goodbye: no commit, no flush (a crash, or a test done with a stuck worker)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
