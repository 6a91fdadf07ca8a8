"""Live data from a real Prometheus: the KEDA replica endpoint, and the verdicts scraped back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient

from features.prometheus import PrometheusImportError, fetch_range
from models import StaticThresholdDetector
from models.bundle import DetectorBundle
from models.forecast import SeasonalNaiveForecaster
from serving.app import create_app
from serving.live import LiveConfig, LiveConfigError
from serving.loader import LoadedModel, ModelHolder
from serving.settings import Settings
from serving.watch import Watcher
from tests.serving.conftest import daily_series, window_body

pytestmark = pytest.mark.integration


def live_config(url: str, **scaling) -> LiveConfig:
    target = {"metric": "cpu_ratio", "query": 'node_cpu_ratio{service="checkout"}',
              "capacity_per_replica": 0.1, "target_utilisation": 0.5, "min_replicas": 1,
              "max_replicas": 50, "horizon": 60} | scaling
    return LiveConfig.model_validate({"prometheus": {"url": url, "timeout_s": 5},
                                      "step_s": 10, "history_s": 4 * 3600,
                                      "scaling": {"checkout": target}})


def test_live_config_file_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text("prometheus: {url: ftp://x}\nscaling: {web: {query: up}}\n")
    with pytest.raises(LiveConfigError) as error:
        LiveConfig.load(path)
    text = str(error.value)
    assert str(path) in text and "prometheus.url" in text
    assert "scaling.web.capacity_per_replica" in text
    with pytest.raises(LiveConfigError, match="cannot read"):
        LiveConfig.load(tmp_path / "missing.yaml")


def test_a_window_comes_back_on_a_regular_grid_with_gaps_marked(prometheus_history):
    config = live_config(prometheus_history.url)
    end = pd.Timestamp(prometheus_history.end, unit="s", tz="UTC")
    window = config.read('node_cpu_ratio{service="checkout"}', 3600, end=end)
    assert len(window) == 360 and window.index[-1] == end
    assert (window.index.to_series().diff().dropna() == pd.Timedelta("10s")).all()
    t = prometheus_history.end
    assert window.iloc[-1] == pytest.approx(prometheus_history.value("node_cpu_ratio",
                                                                     "checkout", t))
    with pytest.raises(PrometheusImportError, match="expected one series, got 2"):
        config.read("node_cpu_ratio", 600, end=end)


def test_a_rate_over_a_scrape_gap_is_a_gap_not_a_dip(prometheus_history, caplog):
    """A counter with no samples for 100 s (a Prometheus restart): ``rate(...[5m])`` dips
    by about a third while the gap is in its range; those points come back as missing, the
    others as Prometheus computed them."""
    from tests.servers import (
        HISTORY_COUNTER,
        HISTORY_COUNTER_RATE,
        HISTORY_SCRAPE_GAP_AT_S,
        HISTORY_SCRAPE_GAP_S,
    )

    config = live_config(prometheus_history.url)
    gap_at = prometheus_history.start + HISTORY_SCRAPE_GAP_AT_S
    end = pd.Timestamp(gap_at + 1800, unit="s", tz="UTC")
    query = f'sum(rate({HISTORY_COUNTER}{{job="checkout"}}[5m]))'
    with caplog.at_level("INFO", logger="features.prometheus"):
        window = config.read(query, 3600, end=end)
    assert len(window) == 360
    missing = window.index[window.isna()]
    gap_start = pd.Timestamp(gap_at, unit="s", tz="UTC")
    # Every point whose 5 minutes held the gap long enough to lose a tenth of its samples.
    assert missing.min() >= gap_start and missing.max() < gap_start + pd.Timedelta(
        seconds=HISTORY_SCRAPE_GAP_S + 300)
    assert 10 <= len(missing) <= 40, missing
    assert window.dropna().between(0.9 * HISTORY_COUNTER_RATE,
                                   1.1 * HISTORY_COUNTER_RATE).all(), window.describe()
    assert "not scored" in caplog.text and "scrape gap" in caplog.text
    # Prometheus' own answer dips there: what would have been scored.
    with httpx.Client() as client:
        (raw,) = fetch_range(client, prometheus_history.url, query, int(missing[0].value // 1e6),
                             int(missing[-1].value // 1e6), 10_000, timeout_s=5)
    assert min(float(v) for _, v in raw["values"]) < 0.8 * HISTORY_COUNTER_RATE


def test_keda_endpoint_answers_one_number_from_live_demand(settings, loaded_model,
                                                           prometheus_history):
    live = live_config(prometheus_history.url)
    client = TestClient(create_app(settings.replace(live=live), loaded_model))
    response = client.get("/v1/recommendations/checkout/replicas")
    assert response.status_code == 200, response.text
    body = response.json()
    # checkout's CPU ratio swings around 0.6: at 0.05 per replica (0.1 at 50 %) that is
    # about 12 replicas, and never fewer than the lowest recent demand needs.
    assert 6 <= body["replicas"] <= 20, body
    assert body["current_replicas"] == 1 and body["model"]["version"] == "3"
    # The same answer as POST /v1/recommendations given the same history.
    demand = live.read(live.scaling["checkout"].query, live.history_s)
    posted = client.post("/v1/recommendations", json={
        "service": "checkout", "metric": "cpu_ratio", "capacity_per_replica": 0.1,
        "target_utilisation": 0.5, "max_replicas": 50, "current_replicas": 1, "horizon": 60,
        "history": {k: v for k, v in window_body(demand).items()
                    if k in ("timestamps", "values")}}).json()
    assert posted["replicas"] == body["replicas"]
    exported = client.get("/metrics").text
    assert f'aiops_recommended_replicas{{service="checkout"}} {float(body["replicas"])}' \
        in exported


def test_keda_endpoint_errors_are_clear(settings, loaded_model):
    dead = live_config("http://127.0.0.1:9")  # nothing listens on the discard port
    client = TestClient(create_app(settings.replace(live=dead), loaded_model))
    down = client.get("/v1/recommendations/checkout/replicas")
    assert down.status_code == 502
    assert "cannot connect" in down.json()["detail"]
    unknown = client.get("/v1/recommendations/nope/replicas")
    assert unknown.status_code == 404 and "['checkout']" in unknown.json()["detail"]


def _serve_in_thread(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


def test_prometheus_scrapes_the_exported_verdicts(settings, loaded_model, start_prometheus):
    url, server, thread = _serve_in_thread(create_app(settings, loaded_model))
    try:
        window = daily_series(288 * 6, seed=1).iloc[-120:].copy()
        window.iloc[-1] += 500
        scored = httpx.post(f"{url}/v1/score",
                            json={"series": [window_body(window, "web", "cpu")]}).json()
        httpx.post(f"{url}/v1/forecast", json={"service": "web", "metric": "cpu",
                                               "horizon": 24})
        prometheus = start_prometheus([f"{url}/metrics"])
        try:
            got = prometheus.wait_for('aiops_anomaly_score{service="web",metric="cpu"}')
            assert float(got[0]["value"][1]) == pytest.approx(scored["results"][0]["scores"][-1])
            quantiles = prometheus.wait_for('aiops_forecast{service="web",horizon="1h"}',
                                            n_series=3)
            assert {r["metric"]["quantile"] for r in quantiles} == {"q10", "q50", "q90"}
        finally:
            prometheus.stop()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_example_live_config_in_deploy_loads():
    config = LiveConfig.load(Path(__file__).parents[2] / "deploy" / "live.yaml")
    assert config.scaling and config.series and config.alertmanager is not None


CHECKOUT_CPU = 'node_cpu_ratio{service="checkout"}'


def _shipped_defaults() -> tuple[float, int]:
    """The step and forecast horizon ``aiops retrain --nightly --prometheus`` trains at."""
    from cli.main import build_parser

    args = build_parser().parse_args(["retrain", "--nightly", "--data", "unused"])
    return args.step, args.forecast_horizon


@pytest.fixture(scope="module")
def trained_on_live_data(prometheus_history) -> LoadedModel:
    """checkout/cpu_ratio's models, fitted on a day of its history at the shipped step."""
    step_s, horizon = _shipped_defaults()
    reader = LiveConfig.model_validate({"prometheus": {"url": prometheus_history.url},
                                        "step_s": step_s})
    end = pd.Timestamp(prometheus_history.end, unit="s", tz="UTC") - pd.Timedelta("1h")
    history = reader.read(CHECKOUT_CPU, 86_400, end=end)
    forecaster = SeasonalNaiveForecaster(
        SeasonalNaiveForecaster.config_class(max_horizon=horizon)).fit(history)
    bundle = DetectorBundle({("checkout", "cpu_ratio"): {
        "static_threshold": StaticThresholdDetector().fit(history)}},
        forecasters={("checkout", "cpu_ratio"): forecaster})
    return LoadedModel(bundle, "live-trained", "7", "champion", time.time())


def _minimal_live(url: str, **top) -> LiveConfig:
    """A live config giving only what has no default."""
    return LiveConfig.model_validate({"prometheus": {"url": url}, **top, "scaling": {
        "checkout": {"metric": "cpu_ratio", "query": CHECKOUT_CPU, "capacity_per_replica": 0.1}},
        "series": [{"service": "checkout", "metric": "cpu_ratio", "query": CHECKOUT_CPU}]})


def test_the_shipped_defaults_plan_replicas_end_to_end(tmp_path, trained_on_live_data,
                                                      prometheus_history):
    live = _minimal_live(prometheus_history.url)
    settings = Settings(tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}", live=live)
    client = TestClient(create_app(settings, trained_on_live_data))
    response = client.get("/v1/recommendations/checkout/replicas")
    assert response.status_code == 200, response.text
    body = response.json()
    # checkout's CPU ratio swings around 0.6 ± 0.2: at 0.07 per replica (0.1 at the 70 %
    # target) that is 6 to 12 replicas, within the default bounds 1..100.
    assert 5 <= body["replicas"] <= 13, body
    assert body["model"]["version"] == "7"


def test_a_live_step_other_than_the_models_step_is_refused_naming_both(tmp_path,
                                                                       trained_on_live_data,
                                                                       prometheus_history):
    step_s, _ = _shipped_defaults()
    live = _minimal_live(prometheus_history.url, step_s=10)
    settings = Settings(tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}")
    expected = (f"checkout/cpu_ratio: the live config reads it every step_s=10 s, but its "
                f"models were trained on {step_s:g} s steps; set step_s: {step_s:g} in the live "
                f"config, or retrain them on data at a 10 s step")
    client = TestClient(create_app(settings.replace(live=live),
                                   trained_on_live_data))
    response = client.get("/v1/recommendations/checkout/replicas")
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == expected
    # aiops watch refuses to start on it, and skips it, named, after a swap to such a model.
    with pytest.raises(ValueError) as refused:
        Watcher(live, ModelHolder(trained_on_live_data), settings, post=lambda alerts: None)
    assert expected in str(refused.value)
    holder = ModelHolder(None)
    watcher = Watcher(live, holder, settings, post=lambda alerts: None)
    holder.model = trained_on_live_data
    report = watcher.cycle()
    assert report.scored == [] and report.failed == {"checkout/cpu_ratio": expected}


def test_the_watcher_does_not_page_on_a_scrape_gap_it_would_page_on_as_a_dip(
        prometheus_history, tmp_path):
    """The symptom from the field: a 100 s scrape gap made rate(...[5m]) dip and paged. The
    watcher, at the shipped policy, reads those points as a gap; scored as Prometheus gives
    them, the same model pages."""
    from models import make_detector
    from serving.scoring import Window, score_windows
    from tests.servers import HISTORY_COUNTER, HISTORY_SCRAPE_GAP_AT_S

    query = f'sum(rate({HISTORY_COUNTER}{{job="checkout"}}[5m]))'
    gap_at = prometheus_history.start + HISTORY_SCRAPE_GAP_AT_S
    live = LiveConfig.model_validate({
        "prometheus": {"url": prometheus_history.url}, "step_s": 10, "window_s": 3600,
        "series": [{"service": "checkout", "metric": "request_rate", "query": query}]})
    history = live.read(query, 6 * 3600, end=pd.Timestamp(gap_at - 3600, unit="s", tz="UTC"))
    key = ("checkout", "request_rate")
    bundle = DetectorBundle({key: {name: make_detector(name).fit(history)
                                   for name in ("static_threshold", "dynamic_threshold")}})
    settings = Settings(tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}", live=live)
    posted: list = []
    watcher = Watcher(live, ModelHolder(LoadedModel(bundle, "m", "1", "champion", time.time())),
                      settings, post=posted.extend)
    end = pd.Timestamp(gap_at + 80, unit="s", tz="UTC")  # the rate is still dipping
    report = watcher.cycle(end=end.to_pydatetime())
    assert report.scored == ["checkout/request_rate"] and report.failed == {}
    assert report.fired == [] and posted == []
    with httpx.Client() as client:
        (raw,) = fetch_range(client, prometheus_history.url, query, (gap_at - 3000) * 1000,
                             int(end.value // 1_000_000), 10_000, timeout_s=5)
    values = pd.Series([float(v) for _, v in raw["values"]],
                       index=pd.to_datetime([float(t) for t, _ in raw["values"]], unit="s",
                                            utc=True).as_unit("ns"))
    dipped = score_windows(bundle, [Window(*key, values)], settings.alarm_policy).alerts
    assert any(alert.status == "firing" for alert in dipped), dipped
