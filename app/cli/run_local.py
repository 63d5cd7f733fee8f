"""`make run`: the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set), the example config, a worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from app.cli.devbroker import EmbeddedBroker, port_open

EMBEDDED_PORT = 9092


def main() -> int:
    env = dict(os.environ)
    broker: EmbeddedBroker | None = None
    if "KAFKA_BOOTSTRAP_SERVERS" not in env:
        if port_open("127.0.0.1", EMBEDDED_PORT):
            print(f"something already listens on localhost:{EMBEDDED_PORT}; using it as the broker")
        else:
            Path(".run").mkdir(exist_ok=True)
            broker = EmbeddedBroker(EMBEDDED_PORT, log_path=Path(".run/broker.log")).start()
            print(f"started the embedded broker on {broker.bootstrap} (memory only; log .run/broker.log)")
            # A fresh broker has none of the offsets local state was built from: start clean.
            data_dir = Path(env.get("TRIGGERS_DATA_DIR", "./data"))
            shutil.rmtree(data_dir, ignore_errors=True)
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"localhost:{EMBEDDED_PORT}"
    # The example webhooks go to a local receiver that prints them: allow loopback URLs
    # for this demo only (production keeps the default refusal).
    env.setdefault("TRIGGERS_ALLOW_PRIVATE_URLS", "1")
    receiver = subprocess.Popen([sys.executable, "-m", "app.cli.demo_receiver", "--port", "8099"])  # noqa: S603
    print("webhook receiver on http://127.0.0.1:8099 prints every delivery")
    faust = [sys.executable, "-m", "faust", "-A", "app.main"]
    worker: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        applied = subprocess.run([*faust, "triggers", "apply", "triggers_config"], env=env)  # noqa: S603
        if applied.returncode != 0:
            return applied.returncode
        print("starting a worker; Ctrl-C stops it" + (" and the broker" if broker else ""))
        if not (env.get("TRIGGERS_API_TOKEN", "").strip() or env.get("TRIGGERS_API_TOKENS", "").strip()):
            # Without a token the API is open to whoever reaches it: the worker serves loopback only.
            print(f"HTTP API on http://{env.get('TRIGGERS_WEB_HOST', '127.0.0.1')}:"
                  f"{env.get('TRIGGERS_WEB_PORT', '6066')} (no token set: this machine only)")
        worker = subprocess.Popen([*faust, "worker", "-l", "info"], env=env)  # noqa: S603
        return worker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=60)
        receiver.terminate()
        if broker:
            broker.stop()


def _stop_on_sigterm(*_: object) -> None:
    """Stopped by a supervisor (SIGTERM) rather than Ctrl-C: still stop the worker and the
    broker. The process group may get the signal more than once; only the first counts, so
    the clean-up is not cut short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


if __name__ == "__main__":
    sys.exit(main())
