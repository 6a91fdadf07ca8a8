"""Training and serving on a real two-node Ray cluster, and losing its worker node.

One cluster for the module (``tests/cluster/local_cluster.py``): a head node and a worker
node of one CPU each, both on this machine, started with ``ray start`` in processes of their
own, so that the rest of the test session's Ray is left alone. ``aiops train`` runs as the
nightly RayJob runs it, a driver attached with ``RAY_ADDRESS``; the service is deployed from
``deploy/serve_config.yaml`` through Serve's REST API, as ``serve deploy`` does. The worker
node is killed with SIGKILL, all of its processes at once; a new one is started when a
later test needs two nodes. About 80 s on two cores: more than `make test` has to spare, so
``pyproject.toml`` leaves this folder out unless it is named (``pytest tests/cluster``, as
``.ci/run`` does).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from models import DynamicThresholdDetector, StaticThresholdDetector
from models.bundle import DetectorBundle
from serving.ports import free_port
from tests.cluster.local_cluster import (
    LocalCluster,
    clean_environment,
    dump,
    running_cluster,
    served_requests,
)
from tests.serving.conftest import daily_series, register_champion, window_body
from training.fleet import task_max_retries

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

DEPLOY = Path(__file__).parents[2] / "deploy"
#: The cheapest detectors: the tests are about where fits run, not what they learn.
DETECTORS = "static_threshold,dynamic_threshold"
APP = DEPLOYMENT = "aiops"
SERVED_MODEL = "cluster-served"
TRAIN_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as patch:
        # The state API's client would rather follow these than the address it is given.
        patch.delenv("RAY_ADDRESS", raising=False)
        patch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
        # Short: Ray's socket paths under it must stay below 108 characters.
        with running_cluster(Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))) as started:
            yield started


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cluster-mlflow') / 'mlflow.db'}"


def n_series(frame: pd.DataFrame) -> int:
    return frame.groupby(["service", "metric"]).ngroups


def nightly_retries() -> dict[str, str]:
    """The task-retry variable the nightly RayJob gives its driver."""
    job = yaml.safe_load((DEPLOY / "nightly" / "rayjob.yaml").read_text())
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    return {"RAY_TASK_MAX_RETRIES": env_vars["RAY_TASK_MAX_RETRIES"]}


def start_training(cluster: LocalCluster, data: Path, store_uri: str, model_name: str,
                   folder: Path, **env: str) -> subprocess.Popen:
    """``aiops train`` attached to the cluster with ``RAY_ADDRESS``."""
    command = [sys.executable, "-m", "cli", "train", "--data", str(data),
               "--detectors", DETECTORS, "--holdout-fraction", "0",
               "--forecast-horizon", "0", "--model-name", model_name, "--quiet"]
    environment = clean_environment(
        RAY_ADDRESS=cluster.address, MLFLOW_TRACKING_URI=store_uri, RAY_AUTH_MODE="disabled",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", PYTHONUNBUFFERED="1", **env)
    return subprocess.Popen(command, env=environment, cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"aiops train did not finish in {TRAIN_TIMEOUT_S:g} s:\n"
                             f"{output[-3000:]}") from None
    assert process.returncode == 0, f"aiops train exited {process.returncode}:\n{output[-3000:]}"
    return output


def registered_run(output: str, model_name: str) -> str:
    found = re.search(rf"^run (\w+): registered {model_name} version 1\b", output, re.M)
    assert found, f"no registration line for {model_name} in:\n{output[-3000:]}"
    return found.group(1)


def test_task_retries_default_to_three_and_follow_rays_variable():
    assert task_max_retries({}) == 3
    assert task_max_retries({"RAY_TASK_MAX_RETRIES": "5"}) == 5
    assert task_max_retries({"RAY_TASK_MAX_RETRIES": "-1"}) == -1
    for bad in ("three", "-2", "1.5"):
        with pytest.raises(ValueError, match=rf"RAY_TASK_MAX_RETRIES is '{re.escape(bad)}'"):
            task_max_retries({"RAY_TASK_MAX_RETRIES": bad})
    assert nightly_retries() == {"RAY_TASK_MAX_RETRIES": str(task_max_retries({}))}


def test_aiops_train_fans_the_series_out_over_both_nodes(cluster, fleet_dataset, small_fleet,
                                                         store_uri, tmp_path):
    cluster.ensure_worker()
    process = start_training(cluster, fleet_dataset, store_uri, "cluster-fanout", tmp_path)
    registered_run(finish(process), "cluster-fanout")

    expected = n_series(small_fleet)  # one fit per series: no holdout, no forecasters
    job = cluster.job_of(process.pid)
    fits = cluster.wait_for_attempts(
        job, "_task", lambda rows: sum(r.state == "FINISHED" for r in rows) >= expected)
    finished = [fit for fit in fits if fit.state == "FINISHED"]
    assert len(finished) == expected, dump([(f.task_id, f.state, f.node_id) for f in fits])
    per_node = Counter(fit.node_id for fit in finished)
    assert set(per_node) == {cluster.head_id, cluster.worker_id}, per_node


def test_a_run_that_loses_the_worker_node_still_registers_its_model(
        cluster, fleet_dataset, small_fleet, store_uri, tmp_path):
    """SIGKILL to the worker node while it fits a series: Ray runs that fit again on the head."""
    cluster.ensure_worker()
    retries = nightly_retries()
    assert task_max_retries(retries) >= 1, "the nightly RayJob would not retry a lost fit"
    process = start_training(cluster, fleet_dataset, store_uri, "cluster-node-loss", tmp_path,
                             **retries)
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    fitting = False
    while not fitting and process.poll() is None and time.monotonic() < deadline:
        fitting = cluster.running_on_worker("_task")
        if not fitting:
            time.sleep(0.02)
    cluster.kill_worker()
    output = finish(process)
    assert fitting, f"the run ended before the worker node fitted a series:\n{output[-2000:]}"
    run_id = registered_run(output, "cluster-node-loss")

    client = MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
    assert client.get_model_version("cluster-node-loss", "1").status == "READY"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["n_series_fitted"] == n_series(small_fleet)
    assert run.data.metrics["n_series_failed"] == 0

    # The fit that ran on the dead node failed there and finished on the head afterwards.
    job = cluster.job_of(process.pid)
    lost = {"NODE_DIED", "WORKER_DIED"}

    def settled(rows) -> bool:
        failed = {r.task_id for r in rows if r.state == "FAILED" and r.error_type in lost}
        redone = {r.task_id for r in rows if r.state == "FINISHED" and r.attempt_number > 0}
        return bool(failed) and failed <= redone

    attempts = cluster.wait_for_attempts(job, "_task", settled)
    rows = [(a.task_id[:8], a.attempt_number, a.state, a.error_type, a.node_id[:8]
             if a.node_id else None) for a in attempts]
    assert settled(attempts), dump(rows)
    failed = [a for a in attempts if a.state == "FAILED"]
    assert {a.node_id for a in failed} == {cluster.worker_id}, dump(rows)
    assert all(a.node_id == cluster.head_id for a in attempts
               if a.state == "FINISHED" and a.attempt_number > 0), dump(rows)
    assert len({a.task_id for a in attempts if a.state == "FINISHED"}) == n_series(small_fleet)


def serve_config(port: int, tracking_uri: str, cache_dir: Path) -> dict:
    """``deploy/serve_config.yaml`` for this machine: addresses, store, two fixed replicas."""
    config = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    # Both nodes have this machine's address, so only one proxy can take the port: the
    # head's. Requests reach the worker's replica through it (local_cluster.NODE_ENVIRONMENT).
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = config["applications"]
    app["args"].update(model_name=SERVED_MODEL, tracking_uri=tracking_uri,
                       cache_dir=str(cache_dir), num_replicas="2")
    (deployment,) = app["deployments"]
    # Two replicas, which Serve spreads over the nodes, at half a node's CPU each: one node
    # holds both when the other is lost.
    del deployment["autoscaling_config"]
    deployment["num_replicas"] = 2
    deployment["ray_actor_options"] = {"num_cpus": 0.5}
    return config


@dataclass
class Served:
    url: str
    body: dict
    replicas: list[dict]


@pytest.fixture(scope="module")
def served(cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A tiny champion, served by two replicas (both nodes) behind the head's proxy."""
    folder = tmp_path_factory.mktemp("cluster-served")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    history = daily_series(288 * 5)
    bundle = DetectorBundle({("web", "cpu"): {
        "static_threshold": StaticThresholdDetector().fit(history),
        "dynamic_threshold": DynamicThresholdDetector().fit(history)}})
    register_champion(bundle, uri, SERVED_MODEL, folder)

    cluster.ensure_worker()
    port = free_port()
    cluster.deploy(serve_config(port, uri, folder / "cache"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    replicas: list[dict] = []
    ready = False
    while time.monotonic() < deadline and not ready:
        replicas = [r for r in cluster.replicas(APP, DEPLOYMENT) if r["state"] == "RUNNING"]
        if len(replicas) == 2:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                ready = False
        if not ready:
            time.sleep(0.5)
    assert ready, (f"the service was not ready on two replicas within 120 s: "
                   f"{dump(cluster.serve_details())}")
    body = {"series": [window_body(daily_series(60, start="2026-01-10"), "web", "cpu")]}
    yield Served(url, body, replicas)
    cluster.undeploy()


def test_the_two_replicas_run_one_on_each_node(cluster, served):
    assert Counter(r["node_id"] for r in served.replicas) == {cluster.head_id: 1,
                                                              cluster.worker_id: 1}
    ready = httpx.get(f"{served.url}/readyz", timeout=10).json()
    assert ready["model"]["name"] == SERVED_MODEL
    answer = httpx.post(f"{served.url}/v1/score", json=served.body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["known_series"]


@dataclass
class Load:
    """Clients posting one request after another until stopped (a minute at most)."""

    url: str
    body: dict
    n_clients: int = 2
    limit_s: float = 60.0
    outcomes: list[tuple[float, int | str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, daemon=True)
                         for _ in range(self.n_clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_for(self, n_outcomes: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes) < n_outcomes and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _post(self) -> None:
        deadline = time.monotonic() + self.limit_s
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    outcome: int | str = client.post(self.url, json=self.body).status_code
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                self.outcomes.append((started, outcome))


def test_serving_under_load_loses_under_1_percent_when_the_worker_node_dies(cluster, served):
    (on_worker,) = [r for r in served.replicas if r["node_id"] == cluster.worker_id]
    load = Load(f"{served.url}/v1/score", served.body)
    load.start()
    try:
        load.wait_for(100)
        cluster.kill_worker()
        killed_at = time.monotonic()
        known = {r["replica_id"] for r in served.replicas}
        replacement = None
        while replacement is None and time.monotonic() - killed_at < 45:
            running = [r for r in cluster.replicas(APP, DEPLOYMENT) if r["state"] == "RUNNING"]
            new = [r for r in running if r["replica_id"] not in known]
            replacement = new[0] if len(running) == 2 and new else None
            time.sleep(0.2)
        replaced_at = time.monotonic()
        load.wait_for(len(load.outcomes) + 200)
    finally:
        load.stop()
    assert replacement is not None, (f"no replacement replica ran within 45 s: "
                                     f"{dump(cluster.serve_details())}")

    statuses = Counter(outcome for _, outcome in load.outcomes)
    failed = len(load.outcomes) - statuses[200]
    assert len(load.outcomes) >= 300, statuses
    assert failed < 0.01 * len(load.outcomes), statuses
    after = [outcome for started, outcome in load.outcomes if started > replaced_at]
    assert after and set(after) == {200}, Counter(after)
    assert replacement["node_id"] == cluster.head_id

    # The dead node's replica had its share of the load, and its replacement takes one.
    assert served_requests(cluster.serve_log(APP, DEPLOYMENT, on_worker["replica_id"])) > 0
    log = cluster.serve_log(APP, DEPLOYMENT, replacement["replica_id"])
    deadline = time.monotonic() + 10
    while served_requests(log) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_requests(log) > 0, f"{log} shows no request served"
