"""A two-node Ray cluster on this machine, started as KubeRay starts its pods.

``ray start --head`` and ``ray start --address=...``, each in a process (and a session) of
its own, so that this test process never calls ``ray.init``: whatever Ray the rest of the
test session runs (``tests/conftest.py::ray_session``) is left alone, and the cluster's
processes get an environment of their own, without the variables the session sets for its
Ray (HAProxy's, ``RAY_ADDRESS``). Each node has one CPU; the worker node also has the custom
resource ``worker_node``. What ran where is read from Ray's state API and Serve's REST API
on the head's dashboard, over HTTP.

All the nodes' files (sessions, logs, the address ``ray.init()`` would look for) are in a
private ``RAY_TMPDIR``, and every process carrying it is killed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from serving.ports import free_port

#: Ray settings of both nodes, for a test that sees a node loss handled within seconds:
#: the GCS declares a node dead after 5 missed health checks 1 s apart (Ray's default:
#: 3 s apart). The head's proxy spreads requests over every replica instead of preferring
#: the one on its own node: in deploy/rayservice.yaml the head runs no replica, so there
#: its proxy always sends to replicas on other nodes, as it does here.
NODE_ENVIRONMENT = {
    "RAY_health_check_period_ms": "1000",
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
#: Each node's object store: the fits and the bundle are small.
OBJECT_STORE_BYTES = 256 * 1024**2
START_TIMEOUT_S = 90.0


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without its Ray, service and MLflow settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "AIOPS_", "MLFLOW_"))}
    env.update(extra)
    return env


class LocalCluster:
    """A head node and a worker node; the worker can be killed and a new one added.

    ``folder`` becomes every node's ``RAY_TMPDIR``; keep it short, since Ray's socket paths
    under it must stay below 108 characters.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.head_id = ""
        self.worker_id = ""
        self._n_workers = 0

    @property
    def address(self) -> str:
        """What ``RAY_ADDRESS`` says to attach to this cluster."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def environment(self, **extra: str) -> dict[str, str]:
        """The environment of the cluster's nodes."""
        return clean_environment(RAY_TMPDIR=str(self.folder), **NODE_ENVIRONMENT, **extra)

    # -- nodes -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the head node (with the dashboard) and one worker node."""
        self.head = self._start_node(
            "head", "--head", f"--port={self.gcs_port}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}")
        self.head_id = self._wait_for_node(self.head, "head",
                                           lambda node: node.is_head_node)
        self.add_worker()

    def add_worker(self) -> str:
        """Start a worker node (one CPU, resource ``worker_node``); returns its node id."""
        self._n_workers += 1
        name = f"worker-{self._n_workers}"
        known = {node.node_id for node in self.nodes()}
        self.worker = self._start_node(name, f"--address={self.address}",
                                       '--resources={"worker_node": 1}')
        self.worker_id = self._wait_for_node(
            self.worker, name,
            lambda node: node.node_id not in known and "worker_node" in node.resources_total)
        return self.worker_id

    def ensure_worker(self) -> str:
        """A live worker node's id, starting a new node if the last one was killed."""
        if self.worker is None or self.worker.poll() is not None:
            return self.add_worker()
        return self.worker_id

    def _start_node(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args,
                   "--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}",
                   f"--dashboard-agent-listen-port={free_port()}",
                   # Two raylets on one machine: workers take ports from the kernel rather
                   # than from one range both raylets would hand out.
                   "--min-worker-port=0", "--max-worker-port=0",
                   "--include-log-monitor=false", "--disable-usage-stats"]
        with log:
            return subprocess.Popen(command, env=self.environment(), cwd=self.folder,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _wait_for_node(self, process: subprocess.Popen, name: str,
                       matches: Callable[[Any], bool]) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(Exception):  # the dashboard is not up yet
                found = [n for n in self.nodes() if n.state == "ALIVE" and matches(n)]
                if found:
                    return found[0].node_id
            time.sleep(0.3)
        raise AssertionError(f"the {name} node did not join within {START_TIMEOUT_S:g} s "
                             f"(exit {process.poll()}):\n{self.log_tail(name)}")

    def log_tail(self, name: str, n_lines: int = 30) -> str:
        path = self.folder / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-n_lines:])

    def worker_processes(self) -> list[psutil.Process]:
        """Every process of the worker node: ``ray start``, the raylet, its agents, workers.

        The raylet's workers are in process groups of their own, so the node is its tree.
        """
        if self.worker is None:
            return []
        try:
            root = psutil.Process(self.worker.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def running_on_worker(self, title: str) -> bool:
        """Whether a worker process of the worker node is executing ``title`` (a task name).

        Ray titles a worker process ``ray::<task name>`` while it runs that task.
        """
        for process in self.worker_processes():
            with contextlib.suppress(psutil.Error, IndexError):
                if process.cmdline()[0].startswith(f"ray::{title}"):
                    return True
        return False

    def kill_worker(self) -> None:
        """The worker node dies at once, as a lost VM or a killed pod: SIGKILL to all of it."""
        processes = self.worker_processes()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(processes, timeout=10)
        if self.worker is not None:
            self.worker.wait(timeout=10)

    def shutdown(self) -> None:
        """Kill every process of the cluster, those orphaned by a killed node included.

        The nodes' trees, and any process left whose working directory is the cluster's
        folder (each node's, inherited by what it starts): a retitled process (``ray::...``)
        overwrites its environment in ``/proc``, so ``RAY_TMPDIR`` cannot tell.
        """
        mine = {}
        for node in (self.head, self.worker):
            if node is None or node.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(node.pid)
                for process in (root, *root.children(recursive=True)):
                    mine[process.pid] = process
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.pid != os.getpid() and process.cwd() == str(self.folder):
                    mine[process.pid] = process
        for process in mine.values():
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(list(mine.values()), timeout=10)
        for node in (self.head, self.worker):
            if node is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.wait(timeout=10)

    # -- Ray's state API ---------------------------------------------------------------------

    def nodes(self) -> list:
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard, limit=1000, timeout=10)

    def job_of(self, pid: int) -> str:
        """The id of the Ray job whose driver is the process ``pid``."""
        from ray.util.state import list_jobs

        for job in list_jobs(address=self.dashboard, limit=1000, timeout=10):
            if job.driver_info is not None and str(job.driver_info.pid) == str(pid):
                return job.job_id
        raise AssertionError(f"no Ray job has the driver pid {pid}")

    def task_attempts(self, job_id: str, name: str) -> list:
        """Every attempt of every task called ``name`` of a job (one row per attempt)."""
        from ray.util.state import list_tasks

        return list_tasks(address=self.dashboard, limit=10_000, timeout=10,
                          filters=[("job_id", "=", job_id), ("name", "=", name)],
                          raise_on_missing_output=False)

    def wait_for_attempts(self, job_id: str, name: str,
                          done: Callable[[list], bool], timeout_s: float = 20.0) -> list:
        """Task attempts, once ``done(attempts)`` (workers report them about every second)."""
        deadline = time.monotonic() + timeout_s
        attempts = self.task_attempts(job_id, name)
        while not done(attempts) and time.monotonic() < deadline:
            time.sleep(0.5)
            attempts = self.task_attempts(job_id, name)
        return attempts

    # -- Ray Serve's REST API ----------------------------------------------------------------

    def deploy(self, config: Mapping[str, Any]) -> None:
        """What ``serve deploy`` does with a config file."""
        response = httpx.put(f"{self.dashboard}/api/serve/applications/", json=dict(config),
                             timeout=60)
        assert response.status_code == 200, response.text

    def undeploy(self) -> None:
        httpx.delete(f"{self.dashboard}/api/serve/applications/", timeout=60)

    def serve_details(self) -> dict:
        return httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=10).json()

    def replicas(self, app: str, deployment: str) -> list[dict]:
        """The replicas Serve knows of (``replica_id``, ``state``, ``node_id``, ``actor_id``)."""
        application = self.serve_details().get("applications", {}).get(app) or {}
        return application.get("deployments", {}).get(deployment, {}).get("replicas", [])

    def serve_log(self, app: str, deployment: str, replica_id: str) -> Path:
        """A replica's log, which has a line per request it served."""
        return (self.folder / "ray" / "session_latest" / "logs" / "serve"
                / f"replica_{app}_{deployment}_{replica_id}.log")


def served_requests(log: Path, route: str = "POST /v1/score 200") -> int:
    """How many requests of ``route`` (method, path, status) a replica's log shows."""
    if not log.exists():
        return 0
    return sum(route in line for line in log.read_text(errors="replace").splitlines())


@contextlib.contextmanager
def running_cluster(folder: Path) -> Iterator[LocalCluster]:
    """A started cluster in ``folder``; afterwards its processes are killed, its files removed."""
    cluster = LocalCluster(folder)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def dump(value: Any) -> str:
    """A short JSON rendering of state API rows for an assertion message."""
    return json.dumps(value, default=str)[:4000]
