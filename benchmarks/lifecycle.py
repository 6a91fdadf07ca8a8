"""How long the service and a training run take to start and stop, as an operator sees them.

Real processes on generated data: ``aiops train`` on a small fleet, then ``aiops serve``
started with the registry as it should be, moved away, corrupt, refusing connections and
not answering (each of the last four from the model cache), each stopped by SIGTERM while a
client keeps scoring; and ``aiops train`` stopped by SIGTERM. Prints one line per case.

    .venv/bin/python benchmarks/lifecycle.py [--work DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

AIOPS = [sys.executable, "-m", "cli"]
MODEL = "lifecycle-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(work: Path, tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_SERVE_", "AIOPS_", "RAY_ADDRESS", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, AIOPS_MODEL_NAME=MODEL,
               AIOPS_CACHE_DIR=str(work / "cache"), RAY_AUTH_MODE="disabled",
               AIOPS_NUM_REPLICAS="1", PYTHONUNBUFFERED="1",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    return env


def serve_case(name: str, work: Path, tracking_uri: str, request: bytes) -> None:
    """Start ``aiops serve``, wait for /readyz 200, score for 3 s, SIGTERM, time the exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray_dir = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    env = {**environment(work, tracking_uri), "RAY_TMPDIR": str(ray_dir)}
    started = time.monotonic()
    process = subprocess.Popen([*AIOPS, "serve", "--port", str(port), "--num-cpus", "2"],
                               env=env, cwd=work, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    source = "?"
    try:
        while time.monotonic() - started < 180:
            if process.poll() is not None:
                print(f"{name:<26} exited {process.returncode} before it was ready:\n"
                      f"{process.stdout.read().decode()[-1500:]}")
                return
            try:
                answer = httpx.get(f"{url}/readyz", timeout=2)
                if answer.status_code == 200:
                    source = answer.json().get("model_source", "?")
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        outcomes: list[object] = []
        times: list[float] = []
        bodies: dict[object, str] = {}
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    answer = httpx.post(f"{url}/v1/score", content=request, timeout=30,
                                        headers={"content-type": "application/json"})
                    status: object = answer.status_code
                    bodies.setdefault(status, answer.text[:160])
                except httpx.HTTPError as error:
                    status = type(error).__name__
                outcomes.append(status)
                times.append(time.monotonic())

        worker = threading.Thread(target=client)
        worker.start()
        time.sleep(3)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        stopped_s = time.monotonic() - signalled
        stop.set()
        worker.join(30)
        answered = collections.Counter(o for o in outcomes if not isinstance(o, str))
        refused = len(outcomes) - sum(answered.values())
        other = [t - signalled for t, o in zip(times, outcomes, strict=True) if o != 200]
        span = f" (non-200 from {min(other):+.1f} to {max(other):+.1f} s)" if other else ""
        print(f"{name:<26} ready in {ready_s:5.1f} s from {source.split(':')[0]:<8} SIGTERM -> "
              f"exit {code} in {stopped_s:4.1f} s; answers {dict(answered)}, {refused} "
              f"connections refused after the stop{span}")
        for status, body in bodies.items():
            if status != 200:
                print(f"    {status}: {body}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        shutil.rmtree(ray_dir, ignore_errors=True)


def train_stop_case(work: Path, data: Path, tracking_uri: str) -> None:
    """SIGTERM to ``aiops train`` once its Ray is up; seconds to exit and to no process left."""
    env = environment(work, tracking_uri)
    process = subprocess.Popen([*AIOPS, "train", "--data", str(data), "--model-name", MODEL,
                                "--quiet"], env=env, cwd=work, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    parent = psutil.Process(process.pid)
    while not any(c.name() == "raylet" for c in parent.children()):
        time.sleep(0.2)
    time.sleep(5)
    family = parent.children(recursive=True)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)
    exit_s = time.monotonic() - signalled
    _, alive = psutil.wait_procs(family, timeout=120)
    print(f"{'aiops train, SIGTERM':<26} exit {code} in {exit_s:4.1f} s; its {len(family)} "
          f"Ray processes gone {time.monotonic() - signalled:4.1f} s after the signal"
          + (f", {len(alive)} still alive" if alive else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a "
                        "temporary one, removed after)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="aiops-lifecycle-"))
    work.mkdir(parents=True, exist_ok=True)
    data, store = work / "data", work / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{store}"
    env = environment(work, uri)
    subprocess.run([*AIOPS, "data", "synth", "--out", str(data), "--services", "2", "--days",
                    "4", "--step", "5min"], env=env, check=True, capture_output=True)
    subprocess.run([*AIOPS, "train", "--data", str(data), "--model-name", MODEL, "--detectors",
                    "static_threshold,dynamic_threshold", "--forecast-horizon", "48",
                    "--quiet"], env=env, check=True, capture_output=True)
    subprocess.run([*AIOPS, "data", "sample-request", "--data", str(data), "--out",
                    str(work / "request.json")], env=env, check=True, capture_output=True)
    request = (work / "request.json").read_bytes()

    serve_case("registry as it should be", work, uri, request)
    moved = store.with_name("moved.db")
    store.rename(moved)
    serve_case("registry file moved away", work, uri, request)
    store.write_bytes(b"this is not a database" * 1000)
    serve_case("registry file corrupt", work, uri, request)
    store.unlink()
    moved.rename(store)
    serve_case("registry refusing", work, f"http://127.0.0.1:{free_port()}", request)
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        serve_case("registry not answering", work,
                   f"http://127.0.0.1:{silent.getsockname()[1]}", request)
    train_stop_case(work, data, uri)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
