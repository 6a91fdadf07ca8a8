"""The deployment manifests parse and run the commands that exist."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import yaml

from cli.main import build_parser

DEPLOY = Path(__file__).parents[1] / "deploy"


def _parses(command: list[str]) -> None:
    assert command[0] == "aiops"
    build_parser().parse_args(command[1:])


def test_cronjob_runs_the_nightly_retrain_one_at_a_time():
    job = yaml.safe_load((DEPLOY / "nightly" / "cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["aiops", "retrain"]  # retrain is the nightly job
    _parses(container["command"])


def test_rayjob_and_crontab_run_the_nightly_retrain():
    job = yaml.safe_load((DEPLOY / "nightly" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"]
    _parses(shlex.split(job["spec"]["entrypoint"]))
    lines = [line for line in (DEPLOY / "nightly" / "crontab").read_text().splitlines()
             if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1
    command = shlex.split(lines[0].split("&&", 1)[1].split(">>")[0])
    command[0] = Path(command[0]).name
    _parses(command)


def test_serve_manifests_build_the_app_with_autoscaling():
    config = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    service = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    inner = yaml.safe_load(service["spec"]["serveConfigV2"])
    for app in (config["applications"][0], inner["applications"][0]):
        assert app["import_path"] == "serving.deployment:app_builder"
        (deployment,) = app["deployments"]
        assert deployment["autoscaling_config"]["max_replicas"] >= 2
    from serving.deployment import app_builder

    assert app_builder({k: str(v) for k, v in config["applications"][0]["args"].items()})


def test_the_grafana_dashboard_charts_metrics_the_service_exports():
    import re

    from prometheus_client import generate_latest

    from serving.observability import ServiceMetrics, VerdictMetrics, VerdictRecorder

    metrics = ServiceMetrics(lambda: 0.0)
    metrics.set_model("m", "1", "champion")
    metrics.observe_request("/v1/score", "POST", 500, 0.01)
    metrics.scores.observe(0.5)
    metrics.series.inc()
    verdicts = VerdictRecorder(VerdictMetrics(registry=metrics.registry))
    verdicts.record_score("web", "cpu", [0.1, 0.2])
    verdicts.record_replicas("web", 3)
    frame = pd.DataFrame({"q10": 1.0, "q50": 2.0, "q90": 3.0},
                         index=pd.date_range("2026-01-01", periods=12, freq="5min", tz="UTC"))
    verdicts.record_forecast("web", "cpu", frame)
    exported = {line.split("{")[0].split(" ")[0]
                for line in generate_latest(metrics.registry).decode().splitlines()
                if line and not line.startswith("#")}
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\baiops_[a-z_]+", target["expr"])}
    assert used and used <= exported, used - exported


def _route_exists(path: str, method: str = "GET") -> bool:
    from serving.app import create_app
    from serving.settings import Settings

    paths = create_app(Settings(tracking_uri="sqlite:///unused.db")).openapi()["paths"]
    return method.lower() in paths.get(path, {})


def test_keda_scales_on_the_replica_endpoint_and_reads_its_number():
    from urllib.parse import urlparse

    from serving.schemas import ReplicaCount

    documents = list(yaml.safe_load_all(
        (DEPLOY / "autoscaling" / "keda-scaledobject.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    scaled = kinds["ScaledObject"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["targetValue"] == "1"
    path = urlparse(trigger["metadata"]["url"]).path
    service = path.split("/")[3]
    assert path == f"/v1/recommendations/{service}/replicas"
    assert _route_exists("/v1/recommendations/{service}/replicas")
    assert trigger["metadata"]["valueLocation"] in ReplicaCount.model_fields
    assert trigger["authenticationRef"]["name"] == kinds["TriggerAuthentication"]["metadata"]["name"]


def test_hpa_reads_the_exported_replica_metric_through_the_adapter():
    from prometheus_client import CollectorRegistry

    from serving.observability import VerdictMetrics

    documents = list(yaml.safe_load_all(
        (DEPLOY / "autoscaling" / "hpa-external-metric.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    metric = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["external"]["metric"]
    assert metric["name"] == VerdictMetrics(registry=CollectorRegistry()).replicas._name
    adapter = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
    assert metric["name"] in adapter["externalRules"][0]["seriesQuery"]
