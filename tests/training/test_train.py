"""Training into a real (temporary) MLflow store, with the fan-out on the session's Ray."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.schema import DataValidationError
from models.bundle import DetectorBundle
from training.tracking import CHALLENGER, CHAMPION, DEFAULT_EXPERIMENT, alias_version
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

    # A cheaper second run (no forecasters): only its registration and the gate are checked.
    # Same data: the champion has seen the whole holdout; its configuration (the challenger's,
    # the horizon aside) fitted on this run's training split is the challenger's held-out model.
    second = train(dataclasses.replace(options, forecast_horizon=0))
    assert second.version == "2" and alias_version("test-detectors", CHALLENGER) == "2"
    tags = MlflowClient().get_run(second.run_id).data.tags
    assert "which is the challenger's" in tags["promotion.reason"], tags["promotion.reason"]
    assert second.champion and alias_version("test-detectors", CHAMPION) == "2"


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

    # The forecasters are what this test is about; one cheap detector is enough beside them.
    result = train(dataclasses.replace(options, forecast_horizon=30, holdout_fraction=0.0,
                                       detectors=("static_threshold",),
                                       forecasters=("seasonal_naive", "arima")))
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


def minutes_of(service: str, metric: str, n_points: int, end: str = "2026-01-05T12:00Z"
               ) -> pd.DataFrame:
    """A new series: the last ``n_points`` minutes before ``end``, noisy around 0.4."""
    rng = np.random.default_rng(len(service) + n_points)
    stamps = pd.date_range(end=end, periods=n_points, freq="1min", tz="UTC")
    return pd.DataFrame({"timestamp": stamps, "service": service, "metric": metric,
                         "value": 0.4 + 0.02 * rng.standard_normal(n_points)})


def test_a_new_series_is_trained_with_the_detectors_its_history_allows(tmp_path, mlflow_store,
                                                                       capsys):
    from cli import main
    from features.store import write_dataset

    # 40 minutes: what a user had after importing a fresh node_exporter; 5 minutes: too little.
    write_dataset(pd.concat([minutes_of("checkout", "cpu", 40), minutes_of("search", "cpu", 5)]),
                  tmp_path / "data")
    assert main(["train", "--data", str(tmp_path / "data"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert ("checkout/cpu: 40 points at 1m (40m): trained with static_threshold, "
            "dynamic_threshold, arima; random_forest needs 54 points (54m): train again after "
            "14m more data to add it") in printed
    assert ("search/cpu: 5 points at 1m (5m): not trained (scored by window_baseline until it "
            "is); dynamic_threshold needs 10 points (10m), arima needs 30 points (30m), "
            "random_forest needs 54 points (54m): train again after 5m more data for "
            "static_threshold and dynamic_threshold, 49m more data for all 4") in printed

    bundle = DetectorBundle.load(Path(mlflow.artifacts.download_artifacts(
        "models:/novaevo-detectors@champion", dst_path=str(tmp_path / "model")))
        / "artifacts" / "bundle")
    assert bundle.series == [("checkout", "cpu")]
    assert bundle.detector_names == ["arima", "dynamic_threshold", "static_threshold"]
    run = MlflowClient().get_run(MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])[0].info.run_id)
    assert (run.data.metrics["n_series_partial"], run.data.metrics["n_series_failed"]) == (1, 1)


def test_a_dataset_too_short_for_any_series_names_the_detectors_and_the_wait(tmp_path,
                                                                             mlflow_store, capsys):
    from cli import main
    from features.store import write_dataset

    write_dataset(minutes_of("checkout", "cpu", 20), tmp_path / "data")
    assert main(["train", "--data", str(tmp_path / "data"), "--quiet",
                 "--detectors", "arima,random_forest"]) == 1
    error = capsys.readouterr().err.splitlines()[-1]  # after MLflow's own INFO lines
    assert error == (f"aiops train: error: no series of {tmp_path / 'data'} could be trained (1 "
                     "tried); checkout/cpu: 20 points at 1m (20m): not trained (scored by "
                     "window_baseline until it is); arima needs 30 points (30m), random_forest "
                     "needs 54 points (54m): train again after 34m more data for arima and "
                     "random_forest")
    assert MlflowClient().search_registered_models() == []
