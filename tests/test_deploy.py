"""The deployment manifests parse and run the commands that exist."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from training.cli import build_parser

DEPLOY = Path(__file__).parents[1] / "deploy"


def _parses(command: list[str]) -> None:
    assert command[0] == "aiops"
    build_parser().parse_args(command[1:])


def test_cronjob_runs_the_nightly_retrain_one_at_a_time():
    job = yaml.safe_load((DEPLOY / "nightly" / "cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "--nightly" in container["command"]
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

    from serving.observability import ServiceMetrics

    metrics = ServiceMetrics(lambda: 0.0)
    metrics.set_model("m", "1", "champion")
    metrics.observe_request("/v1/score", "POST", 500, 0.01)
    metrics.scores.observe(0.5)
    metrics.series.inc()
    exported = {line.split("{")[0].split(" ")[0]
                for line in generate_latest(metrics.registry).decode().splitlines()
                if line and not line.startswith("#")}
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\baiops_[a-z_]+", target["expr"])}
    assert used and used <= exported, used - exported
