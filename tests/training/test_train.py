"""Training into a real (temporary) MLflow store, with the fan-out on the session's Ray."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.schema import DataValidationError
from training.tracking import CHALLENGER, CHAMPION, alias_version
from training.train import TrainOptions, train

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture
def options(fleet_dataset: Path) -> TrainOptions:
    return TrainOptions(data=fleet_dataset, model_name="test-detectors", progress=False)


def test_first_run_registers_a_champion_then_a_challenger(options, mlflow_store, small_fleet,
                                                          fleet_dataset):
    first = train(options)
    assert first.champion and first.version == "1"
    assert alias_version("test-detectors", CHAMPION) == "1"

    run = MlflowClient().get_run(first.run_id)
    assert run.data.params["n_series"] == str(small_fleet.groupby(["service", "metric"]).ngroups)
    assert int(run.data.params["n_rows"]) == len(small_fleet)
    # The synthetic fleet is labelled, so the holdout measurement must be there.
    assert "holdout.combined.event_recall" in run.data.metrics
    assert "holdout.forecast.mase_mean" in run.data.metrics
    # The data went in as an MLflow dataset, and plots as PNG artifacts.
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "data"
    assert Path(fleet_dataset).resolve().as_uri() in inputs[0].dataset.source
    plots = [a.path for d in ("plots/scores", "plots/forecasts")
             for a in MlflowClient().list_artifacts(first.run_id, d)]
    assert any(p.endswith(".png") and "scores" in p for p in plots)
    assert any(p.endswith(".png") and "forecasts" in p for p in plots)
    assert run.data.tags["registered_version"] == "1"
    # Forecasters were backtested, chosen per series and logged.
    metrics = run.data.metrics
    assert metrics["forecast.n_series"] == float(run.data.params["n_series"])
    assert 0 < metrics["forecast.mase_mean"] < 10 and 0 <= metrics["forecast.coverage_mean"] <= 1
    chosen = sum(v for k, v in metrics.items() if k.startswith("forecast.chosen."))
    assert chosen == metrics["forecast.n_series"]

    # A cheaper second run (one forecaster): only its registration and the gate are checked.
    second = train(dataclasses.replace(options, forecasters=("seasonal_naive",)))
    assert second.version == "2" and alias_version("test-detectors", CHALLENGER) == "2"
    # Same data: the champion has seen the whole holdout, and the gate says so.
    tags = MlflowClient().get_run(second.run_id).data.tags
    assert "whole holdout, which the champion was trained on" in tags["promotion.reason"]
    expected = "2" if second.champion else "1"
    assert alias_version("test-detectors", CHAMPION) == expected


def test_pyfunc_model_scores_long_rows(options, mlflow_store, small_fleet):
    train(dataclasses.replace(options, holdout_fraction=0.0, forecast_horizon=0))
    model = mlflow.pyfunc.load_model("models:/test-detectors@champion")
    service = small_fleet["service"].iloc[0]
    rows = small_fleet[(small_fleet.service == service) & (small_fleet.metric == "latency_p99")]
    window = rows.tail(100)[["timestamp", "service", "metric", "value"]].copy()
    # The signature takes ISO 8601 text, as a JSON caller would send it.
    window["timestamp"] = window["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    scored = model.predict(window)
    assert len(scored) == len(window) == 100
    assert scored["score"].between(0, 1).all()
    assert set(scored.columns) >= {"timestamp", "service", "metric", "value", "score", "is_anomaly"}


def test_registered_bundle_forecasts_its_series(options, mlflow_store, small_fleet, tmp_path):
    from models.bundle import DetectorBundle
    from models.forecast import FORECASTERS

    result = train(dataclasses.replace(options, forecast_horizon=30, holdout_fraction=0.0))
    path = mlflow.artifacts.download_artifacts(
        f"models:/test-detectors/{result.version}", dst_path=str(tmp_path))
    bundle = DetectorBundle.load(Path(path) / "artifacts" / "bundle")
    service = small_fleet["service"].iloc[0]
    frame, name, known, note = bundle.forecast(service, "request_rate", 30)
    assert known and note is None and name in FORECASTERS and len(frame) == 30
    last = small_fleet.loc[(small_fleet.service == service)
                           & (small_fleet.metric == "request_rate"), "timestamp"].max()
    assert frame.index[0] > last
    with pytest.raises(ValueError, match="horizon=31"):
        bundle.forecast(service, "request_rate", 31)


def test_corrupt_file_fails_before_anything_is_registered(fleet_dataset, tmp_path, mlflow_store):
    data = tmp_path / "data"
    shutil.copytree(fleet_dataset, data)
    victim = next(data.rglob("*.parquet"))
    victim.write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match=str(victim.name)):
        train(TrainOptions(data=data, model_name="test-detectors", progress=False))
    assert MlflowClient().search_registered_models() == []


def test_unknown_detector_is_refused_with_the_known_names(fleet_dataset):
    with pytest.raises(ValueError, match=r"unknown detector.*dynamic_threshold"):
        TrainOptions(data=fleet_dataset, detectors=("no_such_thing",))


def test_series_too_short_to_fit_are_reported_not_fatal(tmp_path, mlflow_store):
    from features.store import write_dataset

    stamps = pd.date_range("2026-01-05", periods=200, freq="5min", tz="UTC")
    long = pd.DataFrame({"timestamp": stamps, "service": "a", "metric": "m", "value": range(200)})
    short = pd.DataFrame({"timestamp": stamps[:3], "service": "b", "metric": "m", "value": [1.0] * 3})
    write_dataset(pd.concat([long, short]), tmp_path / "data")
    result = train(TrainOptions(data=tmp_path / "data", model_name="test-detectors",
                                holdout_fraction=0.0, progress=False))
    assert list(result.failures) == ["b/m"]
    assert "at least" in result.failures["b/m"]
