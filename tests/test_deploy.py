"""The deployment manifests parse and run the commands that exist."""

from __future__ import annotations

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
