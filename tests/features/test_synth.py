"""Tests of the synthetic fleet: shape, determinism, realism, incidents, gaps and validation."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from features.schema import INCIDENT, IS_ANOMALY, METRIC, SERVICE, TIMESTAMP, VALUE
from features.synth import (
    INCIDENT_KINDS,
    METRICS,
    FleetConfig,
    _generate_fleet,
    generate_fleet,
    incident_table,
)

SMALL = FleetConfig(n_services=2, days=3.0, step="5min", seed=1, incidents_per_service=5)
STEP = pd.Timedelta("5min")
N_STEPS = 3 * 24 * 12

#: The metrics each kind may label; spikes and level shifts label exactly one of theirs.
ALLOWED_METRICS = {
    "spike": {"cpu_utilization", "latency_p99", "error_rate", "request_rate"},
    "level_shift": {"cpu_utilization", "memory_utilization", "request_rate", "latency_p99"},
    "memory_leak": {"memory_utilization"},
    "latency_up_cpu_normal": {"latency_p99", "error_rate"},
    "drop_to_zero": {
        "request_rate",
        "cpu_utilization",
        "latency_p99",
        "queue_length",
        "error_rate",
    },
}


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    return generate_fleet(SMALL)


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return _generate_fleet(SMALL, with_incidents=False)


@pytest.fixture(scope="module")
def incidents(fleet: pd.DataFrame) -> pd.DataFrame:
    return incident_table(fleet)


def _wide(frame: pd.DataFrame, service: str) -> pd.DataFrame:
    rows = frame[frame[SERVICE] == service]
    return rows.pivot(index=TIMESTAMP, columns=METRIC, values=VALUE)


def _rows_of(frame: pd.DataFrame, incident: pd.Series, metric: str) -> pd.DataFrame:
    mask = (
        (frame[SERVICE] == incident[SERVICE])
        & (frame[METRIC] == metric)
        & (frame[TIMESTAMP] >= incident["start"])
        & (frame[TIMESTAMP] <= incident["end"])
    )
    return frame[mask]


# --- shape and determinism -------------------------------------------------------------


def test_columns_and_dtypes(fleet: pd.DataFrame) -> None:
    assert list(fleet.columns) == [TIMESTAMP, SERVICE, METRIC, VALUE, IS_ANOMALY, INCIDENT]
    assert fleet[TIMESTAMP].dtype == "datetime64[ns, UTC]"
    for column in (SERVICE, METRIC, INCIDENT):
        assert pd.api.types.is_string_dtype(fleet[column].dtype), column
    assert fleet[VALUE].dtype == np.float64
    assert fleet[IS_ANOMALY].dtype == bool
    assert set(fleet[METRIC].unique()) == set(METRICS)
    assert set(fleet[SERVICE].unique()) == {"checkout", "search"}
    assert fleet[TIMESTAMP].min() == pd.Timestamp(SMALL.start)


def test_sorted_by_service_metric_timestamp(fleet: pd.DataFrame) -> None:
    resorted = fleet.sort_values([SERVICE, METRIC, TIMESTAMP], ignore_index=True)
    pd.testing.assert_frame_equal(fleet, resorted)


def test_incident_column_matches_label(fleet: pd.DataFrame) -> None:
    anomalous = fleet[IS_ANOMALY]
    assert (fleet.loc[~anomalous, INCIDENT] == "").all()
    assert set(fleet.loc[anomalous, INCIDENT].unique()) <= set(INCIDENT_KINDS)


def test_same_config_gives_identical_frame(fleet: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_fleet(SMALL), fleet)


def test_other_seed_gives_other_frame(fleet: pd.DataFrame) -> None:
    other = generate_fleet(FleetConfig(n_services=2, days=3.0, step="5min", seed=2))
    assert not other.equals(fleet)


def test_service_names_continue_with_numbers() -> None:
    config = FleetConfig(n_services=8, days=3.0, step="1h", incidents_per_service=0)
    names = set(generate_fleet(config)[SERVICE].unique())
    assert names == {
        "checkout",
        "search",
        "auth",
        "payments",
        "catalog",
        "inventory",
        "svc-07",
        "svc-08",
    }


def test_one_m_means_one_minute() -> None:
    short = {"n_services": 1, "days": 0.5, "incidents_per_service": 0}
    minute = generate_fleet(FleetConfig(step="1m", **short))
    pd.testing.assert_frame_equal(minute, generate_fleet(FleetConfig(step="1min", **short)))
    steps = minute.loc[minute[METRIC] == "cpu_utilization", TIMESTAMP].diff().dropna()
    assert steps.min() == pd.Timedelta("1min")


def test_full_size_fleet_is_fast() -> None:
    started = time.perf_counter()
    frame = generate_fleet(FleetConfig(n_services=4, days=14.0, step="1min"))
    elapsed = time.perf_counter() - started
    assert len(frame) > 0.99 * 4 * 14 * 1440 * len(METRICS)
    assert elapsed < 5.0, f"generation took {elapsed:.2f} s"


# --- values and realism -----------------------------------------------------------------


def test_values_in_range(fleet: pd.DataFrame) -> None:
    assert not fleet[VALUE].isna().any()
    by_metric = fleet.groupby(METRIC)[VALUE]
    low, high = by_metric.min(), by_metric.max()
    assert low["cpu_utilization"] >= 0 and high["cpu_utilization"] <= 100
    assert low["memory_utilization"] >= 0 and high["memory_utilization"] <= 100
    assert low["error_rate"] >= 0 and high["error_rate"] <= 1
    assert low["queue_length"] >= 0 and low["request_rate"] >= 0 and low["latency_p99"] > 0
    queue = fleet.loc[fleet[METRIC] == "queue_length", VALUE]
    assert (queue == np.round(queue)).all()


def test_normal_error_rate_is_small(fleet: pd.DataFrame) -> None:
    normal = fleet[~fleet[IS_ANOMALY] & (fleet[METRIC] == "error_rate")]
    assert 0.0005 < normal[VALUE].mean() < 0.02


def test_cpu_follows_request_rate(fleet: pd.DataFrame) -> None:
    normal = fleet[~fleet[IS_ANOMALY]]
    for service in normal[SERVICE].unique():
        wide = _wide(normal, service)[["request_rate", "cpu_utilization", "latency_p99"]]
        wide = wide.dropna()
        assert wide["request_rate"].corr(wide["cpu_utilization"]) > 0.7, service
        # Latency rises with CPU, convexly, so rank correlation is the fair measure.
        ranks = wide.rank()
        assert ranks["cpu_utilization"].corr(ranks["latency_p99"]) > 0.5, service


def test_daily_and_weekly_rhythm() -> None:
    # Monday to the next Tuesday, so that a weekend is inside.
    frame = generate_fleet(
        FleetConfig(n_services=2, days=8.0, step="30min", incidents_per_service=0, seed=3)
    )
    rate = frame[frame[METRIC] == "request_rate"].set_index(TIMESTAMP)
    for service, rows in rate.groupby(SERVICE):
        values = rows[VALUE]
        weekday = values.index.day_of_week < 5
        afternoon = (values.index.hour >= 13) & (values.index.hour < 18)
        night = (values.index.hour >= 1) & (values.index.hour < 6)
        assert values[weekday & afternoon].mean() > 1.5 * values[weekday & night].mean(), service
        ratio = values[~weekday].mean() / values[weekday].mean()
        assert 0.4 < ratio < 0.9, (service, ratio)


# --- incidents ---------------------------------------------------------------------------


def test_every_kind_occurs(incidents: pd.DataFrame) -> None:
    assert set(incidents[INCIDENT]) == set(INCIDENT_KINDS)


def test_every_kind_occurs_when_fleet_has_five_incidents() -> None:
    config = FleetConfig(n_services=5, days=3.0, step="10min", incidents_per_service=1)
    assert set(incident_table(generate_fleet(config))[INCIDENT]) == set(INCIDENT_KINDS)


def test_incident_count_matches_config(incidents: pd.DataFrame) -> None:
    assert len(incidents) == SMALL.n_services * SMALL.incidents_per_service
    assert (incidents.groupby(SERVICE).size() == SMALL.incidents_per_service).all()


def test_incidents_avoid_training_part(fleet: pd.DataFrame) -> None:
    start = pd.Timestamp(SMALL.start)
    boundary = start + 0.2 * pd.Timedelta(days=SMALL.days)
    assert fleet.loc[fleet[IS_ANOMALY], TIMESTAMP].min() >= boundary


def test_incidents_are_apart(incidents: pd.DataFrame) -> None:
    for _, rows in incidents.groupby(SERVICE):
        rows = rows.sort_values("start")
        quiet = rows["start"].iloc[1:].to_numpy() - rows["end"].iloc[:-1].to_numpy()
        assert (quiet > pd.Timedelta("1h")).all()


def test_labels_sit_on_expected_metrics(incidents: pd.DataFrame) -> None:
    for _, incident in incidents.iterrows():
        labelled = set(incident["metrics"].split(","))
        allowed = ALLOWED_METRICS[incident[INCIDENT]]
        assert labelled <= allowed, incident.to_dict()
        if incident[INCIDENT] in ("spike", "level_shift"):
            assert len(labelled) == 1
        else:
            assert labelled == allowed


def test_durations(incidents: pd.DataFrame) -> None:
    length = incidents["end"] - incidents["start"] + STEP
    limits = {
        "spike": (STEP, 5 * STEP),
        "level_shift": (pd.Timedelta("1h"), pd.Timedelta("6h")),
        "memory_leak": (pd.Timedelta("2h"), pd.Timedelta("6h")),
        "latency_up_cpu_normal": (pd.Timedelta("30min"), pd.Timedelta("3h")),
        "drop_to_zero": (pd.Timedelta("10min"), pd.Timedelta("2h")),
    }
    for kind, (low, high) in limits.items():
        kind_lengths = length[incidents[INCIDENT] == kind]
        assert (kind_lengths >= low - STEP).all() and (kind_lengths <= high + STEP).all(), kind


def test_only_labelled_rows_differ_from_clean_fleet(
    fleet: pd.DataFrame, clean: pd.DataFrame
) -> None:
    pd.testing.assert_series_equal(fleet[TIMESTAMP], clean[TIMESTAMP])
    assert not clean[IS_ANOMALY].any()
    changed = fleet[VALUE].to_numpy() != clean[VALUE].to_numpy()
    assert not (changed & ~fleet[IS_ANOMALY].to_numpy()).any()


def test_latency_up_leaves_cpu_and_load_alone(
    fleet: pd.DataFrame, clean: pd.DataFrame, incidents: pd.DataFrame
) -> None:
    cases = incidents[incidents[INCIDENT] == "latency_up_cpu_normal"]
    assert len(cases) > 0
    for _, incident in cases.iterrows():
        for metric in ("cpu_utilization", "request_rate", "queue_length", "memory_utilization"):
            rows = _rows_of(fleet, incident, metric)
            assert not rows[IS_ANOMALY].any()
            np.testing.assert_array_equal(
                rows[VALUE].to_numpy(), clean.loc[rows.index, VALUE].to_numpy()
            )
        latency = _rows_of(fleet, incident, "latency_p99")
        ratio = latency[VALUE] / clean.loc[latency.index, VALUE]
        assert ratio.between(2.0 - 1e-9, 4.0 + 1e-9).all()
        assert latency[IS_ANOMALY].all()


def test_drop_to_zero_stops_traffic(
    fleet: pd.DataFrame, clean: pd.DataFrame, incidents: pd.DataFrame
) -> None:
    for _, incident in incidents[incidents[INCIDENT] == "drop_to_zero"].iterrows():
        assert (_rows_of(fleet, incident, "request_rate")[VALUE] == 0).all()
        assert (_rows_of(fleet, incident, "queue_length")[VALUE] == 0).all()
        assert (_rows_of(fleet, incident, "error_rate")[VALUE] == 0).all()
        cpu = _rows_of(fleet, incident, "cpu_utilization")
        assert (cpu[VALUE] < clean.loc[cpu.index, VALUE]).all()
        memory = _rows_of(fleet, incident, "memory_utilization")
        assert not memory[IS_ANOMALY].any()


def test_memory_leak_climbs_then_recovers(
    fleet: pd.DataFrame, clean: pd.DataFrame, incidents: pd.DataFrame
) -> None:
    for _, incident in incidents[incidents[INCIDENT] == "memory_leak"].iterrows():
        rows = _rows_of(fleet, incident, "memory_utilization")
        excess = rows[VALUE] - clean.loc[rows.index, VALUE]
        assert (excess.diff().dropna() >= -1e-9).all() or rows[VALUE].max() == 99.0
        assert excess.iloc[-1] > 15 or rows[VALUE].iloc[-1] == 99.0
        assert rows[VALUE].max() <= 99.0
        after = fleet[
            (fleet[SERVICE] == incident[SERVICE])
            & (fleet[METRIC] == "memory_utilization")
            & (fleet[TIMESTAMP] == incident["end"] + STEP)
        ]
        assert not after[IS_ANOMALY].any()


def test_spikes_and_shifts_are_visible(
    fleet: pd.DataFrame, clean: pd.DataFrame, incidents: pd.DataFrame
) -> None:
    for _, incident in incidents[incidents[INCIDENT].isin(["spike", "level_shift"])].iterrows():
        rows = _rows_of(fleet, incident, incident["metrics"])
        before = clean.loc[rows.index, VALUE]
        if incident[INCIDENT] == "spike":
            assert (rows[VALUE] >= 1.5 * before).all()
        else:
            relative = (rows[VALUE] - before).abs() / before
            assert (relative > 0.3).all() or (rows[VALUE] == 100.0).any()


# --- gaps --------------------------------------------------------------------------------


def test_no_duplicate_timestamps_within_a_series(fleet: pd.DataFrame) -> None:
    assert not fleet.duplicated([SERVICE, METRIC, TIMESTAMP]).any()


def test_gaps_exist_but_are_rare(fleet: pd.DataFrame) -> None:
    counts = fleet.groupby([SERVICE, METRIC]).size()
    assert (counts < N_STEPS).all()
    missing = 1.0 - len(fleet) / (N_STEPS * len(counts))
    assert 0.0 < missing < 0.01
    steps = fleet.groupby([SERVICE, METRIC])[TIMESTAMP].diff().dropna()
    assert (steps % STEP == pd.Timedelta(0)).all()
    assert steps.max() > STEP


def test_gaps_stay_outside_incidents(fleet: pd.DataFrame, incidents: pd.DataFrame) -> None:
    for _, incident in incidents.iterrows():
        expected = (incident["end"] - incident["start"]) // STEP + 1
        for metric in METRICS:
            assert len(_rows_of(fleet, incident, metric)) == expected


def test_series_span_the_whole_timeline(fleet: pd.DataFrame) -> None:
    span = fleet.groupby([SERVICE, METRIC])[TIMESTAMP].agg(["min", "max"])
    start = pd.Timestamp(SMALL.start)
    assert (span["min"] == start).all()
    assert (span["max"] == start + (N_STEPS - 1) * STEP).all()


# --- incident_table ----------------------------------------------------------------------


def test_incident_table_columns(incidents: pd.DataFrame) -> None:
    assert list(incidents.columns) == [SERVICE, INCIDENT, "start", "end", "metrics"]
    assert incidents["start"].dtype == "datetime64[ns, UTC]"
    assert (incidents["end"] >= incidents["start"]).all()
    for metrics in incidents["metrics"]:
        names = metrics.split(",")
        assert names == sorted(names)


def test_incident_table_covers_every_labelled_row(
    fleet: pd.DataFrame, incidents: pd.DataFrame
) -> None:
    covered = 0
    for _, incident in incidents.iterrows():
        for metric in incident["metrics"].split(","):
            rows = _rows_of(fleet, incident, metric)
            covered += int((rows[IS_ANOMALY] & (rows[INCIDENT] == incident[INCIDENT])).sum())
    assert covered == int(fleet[IS_ANOMALY].sum())


def test_incident_table_ignores_row_order(fleet: pd.DataFrame, incidents: pd.DataFrame) -> None:
    shuffled = fleet.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(incident_table(shuffled), incidents)


def test_incident_table_merges_overlapping_runs_and_splits_apart_ones() -> None:
    stamps = pd.date_range("2026-01-05", periods=6, freq="1min", tz="UTC")
    labels = {
        "latency_p99": [False, True, True, True, False, True],
        "error_rate": [False, False, True, True, True, False],
    }
    frame = pd.DataFrame(
        {
            TIMESTAMP: np.tile(stamps, 2),
            SERVICE: "api",
            METRIC: np.repeat(list(labels), 6),
            VALUE: 1.0,
            IS_ANOMALY: np.concatenate(list(labels.values())),
        }
    )
    frame[INCIDENT] = np.where(frame[IS_ANOMALY], "latency_up_cpu_normal", "")
    table = incident_table(frame)
    assert table["start"].tolist() == [stamps[1], stamps[5]]
    assert table["end"].tolist() == [stamps[4], stamps[5]]
    assert table["metrics"].tolist() == ["error_rate,latency_p99", "latency_p99"]


def test_incident_table_of_clean_fleet_is_empty(clean: pd.DataFrame) -> None:
    table = incident_table(clean)
    assert table.empty
    assert list(table.columns) == [SERVICE, INCIDENT, "start", "end", "metrics"]


def test_incident_table_names_missing_column(fleet: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=IS_ANOMALY):
        incident_table(fleet.drop(columns=[IS_ANOMALY]))


# --- config validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_services", 0),
        ("n_services", 1001),
        ("days", 0.0),
        ("days", -1.0),
        ("days", float("nan")),
        ("days", 400.0),
        ("step", "0s"),
        ("step", "2h"),
        ("step", "1M"),
        ("step", "soon"),
        ("seed", -1),
        ("start", "not a date"),
        ("incidents_per_service", -1),
        ("incidents_per_service", 40),
    ],
)
def test_bad_value_names_field(field: str, value: object) -> None:
    fields: dict[str, object] = {"days": 3.0, "step": "5min", field: value}
    with pytest.raises(ValueError, match=field):
        FleetConfig(**fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_services", 2.5), ("n_services", True), ("days", "3"), ("step", 60), ("seed", 1.0)],
)
def test_wrong_type_names_field(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        FleetConfig(**{field: value})


def test_too_short_timeline_is_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        FleetConfig(days=0.1, step="1h", incidents_per_service=0)


def test_config_is_frozen_and_keyword_only() -> None:
    config = FleetConfig()
    with pytest.raises(AttributeError):
        config.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        FleetConfig(4)  # type: ignore[misc]


def test_latency_factor_sets_how_far_latency_rises_and_is_validated():
    import dataclasses as _dc

    base = FleetConfig(n_services=5, days=3, step="5min", seed=2, incidents_per_service=2)
    subtle = _dc.replace(base, latency_factor=(1.3, 1.5))
    clean = generate_fleet(base)
    frames = {"default": clean, "subtle": generate_fleet(subtle)}
    ratios = {}
    for name, frame in frames.items():
        lat = frame[(frame.metric == "latency_p99")]
        hit = lat[lat.incident == "latency_up_cpu_normal"]
        assert not hit.empty
        ratios[name] = hit["value"].median() / lat[~lat.is_anomaly]["value"].median()
    assert ratios["subtle"] < ratios["default"]
    with pytest.raises(ValueError, match="latency_factor"):
        FleetConfig(latency_factor=(0.5, 2.0))
