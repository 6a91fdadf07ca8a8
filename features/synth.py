"""A seeded synthetic fleet of service metrics with labelled incidents.

The fleet is what detectors and forecasters are developed and benchmarked on
before real data is at hand, so it aims to be plausible and learnable rather
than merely random: every service has its own load level, a smooth daily and
weekly rhythm, a mild trend and correlated noise, and its six metrics are
derived from the load the way they are on a real host (CPU follows load,
latency and queue length rise convexly with CPU, errors follow latency).

Incidents of five kinds are injected after the first 20 % of the timeline,
which is kept clean for training, and their rows are labelled. A few rows are
dropped (never inside an incident) so that consumers have to handle gaps.

The module stays whole: the config's limits are computed from the same
incident durations and separations the generator draws with, and the draws
happen in one seeded order, so the pieces change together.

Examples
--------
>>> frame = generate_fleet(FleetConfig(n_services=2, days=3, step="5min"))
>>> incident_table(frame).shape[0]
10
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import INCIDENT, IS_ANOMALY, METRIC, SERVICE, TIMESTAMP, VALUE
from features.timeparse import parse_duration, parse_timestamp

__all__ = [
    "INCIDENT_KINDS",
    "METRICS",
    "FleetConfig",
    "generate_fleet",
    "incident_table",
]

logger = logging.getLogger(__name__)

METRICS: tuple[str, ...] = (
    "cpu_utilization",
    "memory_utilization",
    "request_rate",
    "error_rate",
    "latency_p99",
    "queue_length",
)
INCIDENT_KINDS: tuple[str, ...] = (
    "spike",
    "level_shift",
    "memory_leak",
    "latency_up_cpu_normal",
    "drop_to_zero",
)

_SERVICE_NAMES: tuple[str, ...] = ("checkout", "search", "auth", "payments", "catalog", "inventory")

# Metric positions in the generation arrays (the order of METRICS).
_CPU, _MEM, _RATE, _ERR, _LAT, _QUEUE = range(len(METRICS))
_SPIKE, _SHIFT, _LEAK, _LATENCY_UP, _DROP = range(len(INCIDENT_KINDS))

_SPIKE_METRICS = (_CPU, _LAT, _ERR, _RATE)
# Queue length and error rate are left out of level shifts: both sit near zero
# for long stretches, where ±40 % is invisible.
_SHIFT_METRICS = (_CPU, _MEM, _RATE, _LAT)

_HOUR_S = 3600.0
_MINUTE_S = 60.0
#: Duration ranges in seconds; spikes are counted in steps instead (see _SPIKE_STEPS).
_DURATION_S: dict[int, tuple[float, float]] = {
    _SHIFT: (1 * _HOUR_S, 6 * _HOUR_S),
    _LEAK: (2 * _HOUR_S, 6 * _HOUR_S),
    _LATENCY_UP: (30 * _MINUTE_S, 3 * _HOUR_S),
    _DROP: (10 * _MINUTE_S, 2 * _HOUR_S),
}
_SPIKE_STEPS = (1, 5)
#: Quiet time kept between two incidents of a service, and after the last one,
#: so that a detector's alarm can be attributed to one incident.
_SEPARATION_S = 2 * _HOUR_S
_MIN_SEPARATION_STEPS = 3
#: Share of the timeline at the start that never holds an incident (detectors train on it).
_CLEAN_FRACTION = 0.2
#: Share of rows dropped to create gaps, and the gap lengths (in steps) drawn from.
_MISSING_FRACTION = 0.001
_GAP_LENGTHS = np.array([1, 1, 1, 2, 3])

_MIN_STEP_S = 1.0
_MAX_STEP_S = _HOUR_S
_MAX_DAYS = 366.0
_MIN_STEPS = 50
_MAX_SERVICES = 1000
_MAX_ROWS = 50_000_000

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """What fleet to synthesise.

    Parameters
    ----------
    n_services : int
        Number of services, 1 to 1000. The first six are named ``checkout``,
        ``search``, ``auth``, ``payments``, ``catalog``, ``inventory``; later
        ones ``svc-07``, ``svc-08``, ...
    days : float
        Length of the timeline in days, greater than 0 and at most 366.
    step : str
        Sampling interval as text in any form of
        :func:`features.timeparse.parse_duration` (``"1min"``, ``"1m"``,
        ``"1m30s"``, ``"10s"``, ``"90"``, ``"1h"``), 1 s to 1 h. ``"m"`` means
        minutes; ``"M"`` (month) is refused.
    seed : int
        Seed of ``numpy.random.default_rng``, at least 0. The same config always
        gives the same frame.
    start : str
        First timestamp, as text in any form of
        :func:`features.timeparse.parse_timestamp` (ISO 8601, Unix seconds,
        ``"now-1d"``). A naive timestamp is taken as UTC.
    incidents_per_service : int
        Incidents injected into every service, at least 0. Kinds are dealt in
        turn across the fleet, so every kind occurs as soon as
        ``n_services * incidents_per_service >= 5``. They must fit, with two
        hours between them and after the last, into the last 80 % of the
        timeline even if all have their longest duration (14 days hold up to
        49 per service, 3 days 10, 2 days 6).
    latency_factor : tuple of two floats
        Range of the factor by which latency_p99 rises in a
        ``latency_up_cpu_normal`` incident (default 2-4×); a subtle range such
        as (1.3, 1.8) keeps some incidents inside latency's daily swing, where
        only a detector that knows latency follows load can see them.

    Raises
    ------
    TypeError
        If a field has the wrong type.
    ValueError
        If a field is out of range; the message names field, value and range.
    """

    n_services: int = 4
    days: float = 14.0
    step: str = "1min"
    seed: int = 0
    start: str = "2026-01-05T00:00:00Z"
    incidents_per_service: int = 5
    latency_factor: tuple[float, float] = (2.0, 4.0)

    def __post_init__(self) -> None:
        factors = tuple(self.latency_factor)
        if (len(factors) != 2
                or not all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                           for x in factors)
                or not 1.0 < factors[0] <= factors[1] <= 20.0):
            raise ValueError(f"latency_factor={self.latency_factor!r} must be (low, high) with "
                             "1 < low <= high <= 20")
        _check_int("n_services", self.n_services, 1, _MAX_SERVICES)
        if not isinstance(self.days, numbers.Real) or isinstance(self.days, bool):
            raise TypeError(f"days must be a number of days, got {type(self.days).__name__}")
        if not (0 < self.days <= _MAX_DAYS):  # also refuses NaN
            raise ValueError(
                f"days={self.days!r} is out of range; allowed: 0 < days <= {_MAX_DAYS:g}"
            )
        step_ns = _parse_step(self.step)
        _check_int("seed", self.seed, 0, None)
        _parse_start(self.start)
        _check_int("incidents_per_service", self.incidents_per_service, 0, None)

        n_steps = _count_steps(self.days, step_ns)
        if n_steps < _MIN_STEPS:
            raise ValueError(
                f"days={self.days!r} with step={self.step!r} gives {n_steps} steps; "
                f"a fleet needs at least {_MIN_STEPS} (raise days or shorten step)"
            )
        n_rows = n_steps * self.n_services * len(METRICS)
        if n_rows > _MAX_ROWS:
            raise ValueError(
                f"n_services={self.n_services}, days={self.days!r} and step={self.step!r} "
                f"give {n_rows:,} rows; at most {_MAX_ROWS:,} are allowed"
            )
        needed, available = _worst_case_steps(self, step_ns, n_steps)
        if needed > available:
            step_s = step_ns / _NS_PER_S
            raise ValueError(
                f"incidents_per_service={self.incidents_per_service} does not fit in "
                f"days={self.days!r}: in the worst case the incidents and the "
                f"{_SEPARATION_S / _HOUR_S:g} h between them need {needed * step_s / _HOUR_S:.1f} h "
                f"but only {available * step_s / _HOUR_S:.1f} h (the last 80 % of the timeline) "
                "are available; lower incidents_per_service or raise days"
            )


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < low or (high is not None and value > high):
        allowed = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


def _parse_step(step: object) -> int:
    """Return ``step`` in nanoseconds: text in any :func:`~features.timeparse.parse_duration` form."""
    if not isinstance(step, str):
        raise TypeError(f"step must be a str such as '1min', got {type(step).__name__} ({step!r})")
    delta = parse_duration(step, name="step")
    step_s = delta.value / _NS_PER_S
    if not (_MIN_STEP_S <= step_s <= _MAX_STEP_S):
        raise ValueError(
            f"step={step!r} ({delta}) is out of range; allowed: "
            f"{_MIN_STEP_S:g} s <= step <= {_MAX_STEP_S / _HOUR_S:g} h"
        )
    return int(delta.value)


def _parse_start(start: object) -> int:
    """Return ``start`` as nanoseconds since the epoch; a time without a zone is UTC."""
    if not isinstance(start, str):
        raise TypeError(f"start must be an ISO 8601 str, got {type(start).__name__} ({start!r})")
    stamp = parse_timestamp(start, name="start", naive="utc")
    return int(stamp.as_unit("ns").value)


def _count_steps(days: float, step_ns: int) -> int:
    # The small epsilon keeps 14 days / 1 min at 20160 despite float rounding.
    return math.floor(days * 86_400 * _NS_PER_S / step_ns + 1e-9)


def _separation_steps(step_ns: int) -> int:
    return max(_MIN_SEPARATION_STEPS, math.ceil(_SEPARATION_S * _NS_PER_S / step_ns))


def _duration_steps(seconds: float | np.ndarray, step_ns: int) -> np.ndarray:
    return np.maximum(1, np.rint(np.asarray(seconds) * _NS_PER_S / step_ns)).astype(np.int64)


def _incident_region(n_steps: int, step_ns: int) -> tuple[int, int]:
    """First step an incident may start at and the step every incident must end before."""
    first = math.ceil(_CLEAN_FRACTION * n_steps)
    return first, n_steps - _separation_steps(step_ns)


def _service_kinds(service: int, incidents_per_service: int) -> np.ndarray:
    # Dealing kinds in turn over the whole fleet (not per service) is what makes
    # every kind appear as soon as there are five incidents in total.
    first = service * incidents_per_service
    return np.arange(first, first + incidents_per_service) % len(INCIDENT_KINDS)


def _worst_case_steps(config: FleetConfig, step_ns: int, n_steps: int) -> tuple[int, int]:
    """Steps the longest possible incidents of the worst service need, and steps available."""
    k = config.incidents_per_service
    first, end = _incident_region(n_steps, step_ns)
    if k == 0:
        return 0, end - first
    longest = np.empty(len(INCIDENT_KINDS), dtype=np.int64)
    longest[_SPIKE] = _SPIKE_STEPS[1]
    for kind, (_, high) in _DURATION_S.items():
        longest[kind] = _duration_steps(high, step_ns)
    # Services repeat their kind pattern with a period of at most five.
    needed = max(int(longest[_service_kinds(s, k)].sum()) for s in range(min(config.n_services, 5)))
    return needed + (k - 1) * _separation_steps(step_ns), end - first


@dataclass(frozen=True)
class _Incident:
    service: int
    kind: int
    begin: int  # first step
    end: int  # one past the last step
    metric: int  # the metric a spike or level shift hits; unused otherwise
    factor: float  # spike multiple, signed shift, leak height or latency multiple


def generate_fleet(config: FleetConfig) -> pd.DataFrame:
    """Generate the metrics of a synthetic fleet, with labelled incidents and a few gaps.

    Parameters
    ----------
    config : FleetConfig
        Size, resolution, seed and incident count of the fleet.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per observation, sorted by service, metric and
        timestamp, with columns ``timestamp`` (datetime64[ns, UTC]),
        ``service`` (str), ``metric`` (str, one of :data:`METRICS`), ``value``
        (float64, never NaN), ``is_anomaly`` (bool) and ``incident`` (str: the
        kind from :data:`INCIDENT_KINDS` on anomalous rows, ``""`` otherwise).
        Units: ``cpu_utilization`` and ``memory_utilization`` in percent
        (0-100), ``request_rate`` in requests/s, ``error_rate`` as a fraction
        (0-1), ``latency_p99`` in ms, ``queue_length`` in requests (whole
        numbers, at least 0). About 0.1 % of rows are absent (gaps), never
        inside an incident, never the first or last step of a series.

    Notes
    -----
    What each incident kind does and which rows it labels:

    ``spike``
        One of cpu_utilization, latency_p99, error_rate, request_rate is 3-6
        times its normal value for 1-5 steps (CPU at least +30 points, at most
        100). Only that metric is labelled.
    ``level_shift``
        One of cpu_utilization, memory_utilization, request_rate, latency_p99
        moves up or down by 35-60 % (CPU and memory by at least 10 points)
        for 1-6 h. Only that metric is labelled.
    ``memory_leak``
        memory_utilization climbs linearly by 20-35 points (capped at 99) over
        2-6 h, then falls back (a restart). memory_utilization is labelled.
    ``latency_up_cpu_normal``
        latency_p99 is 2-4 times higher for 30 min-3 h; error_rate follows
        latency as it always does, so it rises a little. Both are labelled;
        cpu_utilization, request_rate, queue_length and memory are exactly as
        without the incident.
    ``drop_to_zero``
        request_rate is 0 for 10 min-2 h; CPU falls to its idle level, latency
        to its no-load level, queue_length and error_rate to 0. These five
        metrics are labelled over the whole outage, even where a value happens
        not to change (a queue already empty at night); memory_utilization is
        untouched.
    """
    return _generate_fleet(config, with_incidents=True)


def _generate_fleet(config: FleetConfig, *, with_incidents: bool) -> pd.DataFrame:
    """Generate the fleet, or with ``with_incidents=False`` the same fleet without incidents.

    Both draw the same random numbers, so the clean fleet holds the same rows
    (gaps included) and equals the real one wherever no incident changed a value.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    step_ns = _parse_step(config.step)
    start_ns = _parse_start(config.start)
    n_steps = _count_steps(config.days, step_ns)
    n_services = config.n_services
    step_s = step_ns / _NS_PER_S

    times_ns = start_ns + np.arange(n_steps, dtype=np.int64) * step_ns
    params = _draw_service_params(rng, n_services)
    noise = _draw_noise(rng, n_services, n_steps, step_s)
    scheduled = _draw_incidents(rng, config, n_steps, step_ns)
    # Gaps are drawn around the scheduled incidents even for the clean fleet so
    # that both fleets hold the same rows.
    present = _draw_present(rng, n_services, n_steps, scheduled)
    incidents = scheduled if with_incidents else []

    load_shape = _load_shape(params, times_ns, start_ns)
    rate_noise = (
        params["rate_sigma_slow"] * noise["rate_slow"]
        + params["rate_sigma_fast"] * noise["rate_fast"]
    )
    rate = params["base_rate"] * load_shape * np.exp(rate_noise)
    latency_factor = np.ones_like(rate)
    labels = np.full((n_services, len(METRICS), n_steps), -1, dtype=np.int8)
    # Incidents that act on the load or on latency change the metrics derived
    # from them too; apply them before deriving so that everything stays consistent.
    for inc in incidents:
        window = slice(inc.begin, inc.end)
        if inc.kind == _DROP:
            rate[inc.service, window] = 0.0
            labels[inc.service, [_RATE, _CPU, _LAT, _QUEUE, _ERR], window] = _DROP
        elif inc.kind == _LATENCY_UP:
            latency_factor[inc.service, window] = inc.factor
            labels[inc.service, [_LAT, _ERR], window] = _LATENCY_UP

    values = np.empty((n_services, len(METRICS), n_steps))
    values[:, _RATE] = rate
    _derive_metrics(values, params, noise, load_shape, latency_factor, times_ns, start_ns, step_s)

    for inc in incidents:
        if inc.kind in (_SPIKE, _SHIFT, _LEAK):
            _apply_single_metric(values, inc, params)
            labels[inc.service, inc.metric, inc.begin : inc.end] = inc.kind

    frame = _assemble(values, labels, present, times_ns)
    logger.debug(
        "generated %d rows for %d services over %d steps of %s with %d incidents in %.2f s",
        len(frame),
        n_services,
        n_steps,
        config.step,
        len(incidents),
        time.perf_counter() - started,
    )
    return frame


def _service_names(n_services: int) -> list[str]:
    width = max(2, len(str(n_services)))
    numbered = [f"svc-{i:0{width}d}" for i in range(len(_SERVICE_NAMES) + 1, n_services + 1)]
    return [*_SERVICE_NAMES, *numbered][:n_services]


def _uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """``n`` draws as a column, ready to broadcast against (service, step) arrays."""
    return rng.uniform(low, high, size=(n, 1))


def _draw_service_params(rng: np.random.Generator, n_services: int) -> dict[str, np.ndarray]:
    """Per-service constants, each an (n_services, 1) column."""
    n = n_services
    return {
        # Load: log-uniform so that small and large services are equally common.
        "base_rate": np.exp(_uniform(rng, math.log(100.0), math.log(3000.0), n)),
        "peak_hour": _uniform(rng, 13.0, 17.0, n),
        "night_floor": _uniform(rng, 0.15, 0.4, n),
        "daily_power": _uniform(rng, 1.0, 2.0, n),
        "weekend_drop": _uniform(rng, 0.2, 0.5, n),
        "weekly_growth": _uniform(rng, -0.02, 0.05, n),
        "rate_sigma_slow": _uniform(rng, 0.03, 0.07, n),
        "rate_sigma_fast": _uniform(rng, 0.01, 0.03, n),
        # CPU: idle level plus a share proportional to load, reaching cpu_peak at the daily peak.
        "cpu_idle": _uniform(rng, 3.0, 10.0, n),
        "cpu_peak": _uniform(rng, 40.0, 70.0, n),
        "cpu_noise": _uniform(rng, 1.0, 2.5, n),
        "latency_base": _uniform(rng, 30.0, 250.0, n),
        "latency_k": _uniform(rng, 0.3, 1.0, n),
        "latency_sigma": _uniform(rng, 0.04, 0.1, n),
        "queue_scale": _uniform(rng, 5.0, 30.0, n),
        "error_base": np.exp(_uniform(rng, math.log(0.001), math.log(0.006), n)),
        "error_k": _uniform(rng, 0.1, 0.4, n),
        "error_sigma": _uniform(rng, 0.1, 0.3, n),
        "memory_base": _uniform(rng, 30.0, 60.0, n),
        "memory_saw_height": _uniform(rng, 3.0, 10.0, n),
        "memory_saw_period_h": _uniform(rng, 8.0, 48.0, n),
        "memory_saw_phase": _uniform(rng, 0.0, 1.0, n),
        "memory_load_coupling": _uniform(rng, 0.0, 4.0, n),
        "memory_noise": _uniform(rng, 0.3, 1.0, n),
    }


#: Correlation times of the slow noise components, in seconds. Defined in time,
#: not in steps, so that a fleet looks alike at every resolution.
_AR_TAU_S = {
    "rate": 45 * _MINUTE_S,
    "cpu": 10 * _MINUTE_S,
    "latency": 15 * _MINUTE_S,
    "error": _HOUR_S,
    "memory": 30 * _MINUTE_S,
}


def _ar1(white: np.ndarray, phi: float) -> np.ndarray:
    """Unit-variance AR(1) series along the last axis, driven by ``white``.

    pandas' exponentially weighted mean with ``adjust=False`` is exactly the
    AR(1) recursion and runs in compiled code, which a Python loop over steps
    would not.
    """
    alpha = 1.0 - phi
    drive = white * math.sqrt(1.0 - phi * phi) / alpha
    # Starting from a unit-variance value makes the series stationary from step 0.
    drive[:, 0] = white[:, 0]
    smoothed = pd.DataFrame(drive.T).ewm(alpha=alpha, adjust=False).mean()
    return smoothed.to_numpy().T.copy()


def _draw_noise(
    rng: np.random.Generator, n_services: int, n_steps: int, step_s: float
) -> dict[str, np.ndarray]:
    """Standard-normal noise, (n_services, n_steps) per name; ``*_slow`` ones are AR(1)."""
    names = ("rate", "cpu", "latency", "error", "memory")
    slow = rng.standard_normal((len(names), n_services, n_steps))
    fast = rng.standard_normal((len(names) + 2, n_services, n_steps))
    noise: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        phi = math.exp(-step_s / _AR_TAU_S[name])
        noise[f"{name}_slow"] = _ar1(slow[i], phi)
        noise[f"{name}_fast"] = fast[i]
    noise["queue_fast"] = fast[len(names)]
    noise["count_fast"] = fast[len(names) + 1]
    return noise


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _load_shape(params: dict[str, np.ndarray], times_ns: np.ndarray, start_ns: int) -> np.ndarray:
    """Expected load relative to the service's weekday peak: daily, weekly and trend factors."""
    hours = times_ns / (_HOUR_S * _NS_PER_S)
    hour_of_day = hours % 24.0
    # The Unix epoch fell on a Thursday, 72 h after the start of its ISO week.
    hour_of_week = (hours + 72.0) % 168.0

    # A raised cosine peaking in the afternoon; the power flattens the night.
    cosine = 0.5 * (1.0 + np.cos(2.0 * np.pi * (hour_of_day - params["peak_hour"]) / 24.0))
    floor = params["night_floor"]
    daily = floor + (1.0 - floor) * cosine ** params["daily_power"]

    # Smooth steps at Saturday 00:00 and Monday 00:00 (the second term covers the
    # wrap-around into Monday), so that no metric jumps at midnight.
    ramp_h = 1.5

    def weekend_from(x: np.ndarray) -> np.ndarray:
        return _sigmoid((x - 120.0) / ramp_h) - _sigmoid((x - 168.0) / ramp_h)

    weekend = weekend_from(hour_of_week) + weekend_from(hour_of_week + 168.0)
    weekly = 1.0 - params["weekend_drop"] * weekend

    weeks = (times_ns - start_ns) / (7 * 86_400 * _NS_PER_S)
    trend = (1.0 + params["weekly_growth"]) ** weeks
    return daily * weekly * trend


def _derive_metrics(
    values: np.ndarray,
    params: dict[str, np.ndarray],
    noise: dict[str, np.ndarray],
    load_shape: np.ndarray,
    latency_factor: np.ndarray,
    times_ns: np.ndarray,
    start_ns: int,
    step_s: float,
) -> None:
    """Fill every metric but request_rate in ``values`` from request_rate and the noise."""
    p = params
    rate = values[:, _RATE]
    idle = p["cpu_idle"]
    slope = (p["cpu_peak"] - idle) / p["base_rate"]
    cpu_noise = p["cpu_noise"] * (0.8 * noise["cpu_slow"] + 0.6 * noise["cpu_fast"])
    cpu = np.clip(idle + slope * rate + cpu_noise, 0.0, 100.0)
    values[:, _CPU] = cpu

    # Queueing: waiting grows like u / (1 - u); capping u keeps it finite at saturation.
    u = np.minimum(cpu / 100.0, 0.95)
    latency_noise = np.exp(
        p["latency_sigma"] * (0.6 * noise["latency_slow"] + 0.8 * noise["latency_fast"])
    )
    latency = p["latency_base"] * (1.0 + p["latency_k"] * u / (1.0 - u)) * latency_noise
    latency *= latency_factor
    values[:, _LAT] = latency

    # Mean queue of an M/M/1-like server is u² / (1 - u); rounding a normal with
    # Poisson-like spread keeps it a count without a Poisson draw, so that the
    # clean and the incident fleet use identical random numbers.
    queue_mean = p["queue_scale"] * u * u / (1.0 - u)
    queue = np.rint(queue_mean + np.sqrt(queue_mean) * noise["queue_fast"])
    values[:, _QUEUE] = np.where(rate > 0.0, np.maximum(queue, 0.0), 0.0)

    # Errors rise with latency (timeouts); their ratio is a binomial share of the
    # requests in the step, hence noisier for small services and short steps.
    error_p = p["error_base"] * (1.0 + p["error_k"] * (latency / p["latency_base"] - 1.0))
    error_p = np.clip(error_p * np.exp(p["error_sigma"] * noise["error_slow"]), 0.0, 1.0)
    requests = np.maximum(rate * step_s, 1.0)
    error = error_p + noise["error_fast"] * np.sqrt(error_p * (1.0 - error_p) / requests)
    values[:, _ERR] = np.where(rate > 0.0, np.clip(error, 0.0, 1.0), 0.0)

    # Memory: a slow sawtooth (garbage collection, periodic restarts) and a little
    # load following. It uses the load shape, not the rate, so that a traffic
    # outage leaves it alone.
    hours = (times_ns - start_ns) / (_HOUR_S * _NS_PER_S)
    saw = (hours / p["memory_saw_period_h"] + p["memory_saw_phase"]) % 1.0
    memory = (
        p["memory_base"]
        + p["memory_saw_height"] * saw
        + p["memory_load_coupling"] * load_shape
        + p["memory_noise"] * (0.7 * noise["memory_slow"] + 0.7 * noise["memory_fast"])
    )
    values[:, _MEM] = np.clip(memory, 0.0, 100.0)


def _draw_incidents(
    rng: np.random.Generator, config: FleetConfig, n_steps: int, step_ns: int
) -> list[_Incident]:
    """Place every service's incidents at random, apart, after the clean part of the timeline."""
    k = config.incidents_per_service
    first, end = _incident_region(n_steps, step_ns)
    separation = _separation_steps(step_ns)
    incidents: list[_Incident] = []
    for service in range(config.n_services):
        kinds = rng.permutation(_service_kinds(service, k))
        lengths = np.empty(k, dtype=np.int64)
        for i, kind in enumerate(kinds):
            if kind == _SPIKE:
                lengths[i] = rng.integers(_SPIKE_STEPS[0], _SPIKE_STEPS[1] + 1)
            else:
                lengths[i] = _duration_steps(rng.uniform(*_DURATION_S[kind]), step_ns)
        # Spreading the spare room at random over k + 1 slots places the
        # incidents uniformly while keeping them ordered and apart;
        # FleetConfig has checked that the room is never negative.
        slack = (end - first) - int(lengths.sum()) - separation * (k - 1)
        offsets = np.sort(rng.integers(0, slack + 1, size=k))
        begins = first + offsets + np.concatenate(([0], np.cumsum(lengths + separation)[:-1]))
        for kind, begin, length in zip(kinds, begins, lengths, strict=True):
            incidents.append(_draw_effect(rng, service, int(kind), int(begin), int(length),
                                          tuple(config.latency_factor)))
    return incidents


def _draw_effect(
    rng: np.random.Generator, service: int, kind: int, begin: int, length: int,
    latency_factor: tuple[float, float] = (2.0, 4.0),
) -> _Incident:
    metric, factor = _RATE, 0.0
    if kind == _SPIKE:
        metric = int(rng.choice(_SPIKE_METRICS))
        factor = float(rng.uniform(3.0, 6.0))
    elif kind == _SHIFT:
        metric = int(rng.choice(_SHIFT_METRICS))
        factor = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 0.6))
    elif kind == _LEAK:
        metric = _MEM
        factor = float(rng.uniform(20.0, 35.0))
    elif kind == _LATENCY_UP:
        metric = _LAT
        factor = float(rng.uniform(*latency_factor))
    return _Incident(
        service=service, kind=kind, begin=begin, end=begin + length, metric=metric, factor=factor
    )


def _apply_single_metric(values: np.ndarray, inc: _Incident, params: dict[str, np.ndarray]) -> None:
    """Apply a spike, level shift or memory leak, which change one metric only."""
    window = slice(inc.begin, inc.end)
    v = values[inc.service, inc.metric, window]
    if inc.kind == _SPIKE:
        if inc.metric == _CPU:
            # A multiple of a busy CPU would pass 100 %; demand a clear jump instead.
            new = np.minimum(np.maximum(v * inc.factor, v + 30.0), 100.0)
        elif inc.metric == _ERR:
            # Small services can report an error rate of exactly 0; spike from the usual level.
            usual = float(params["error_base"][inc.service, 0])
            new = np.minimum(np.maximum(v, usual) * inc.factor, 1.0)
        else:
            new = v * inc.factor
    elif inc.kind == _SHIFT:
        size = abs(inc.factor)
        if inc.factor < 0:
            new = v * (1.0 - size)
        elif inc.metric in (_CPU, _MEM):
            # At night a CPU of 8 % plus 40 % is hard to see; shift percentages by 10 points or more.
            new = np.minimum(v + np.maximum(size * v, 10.0), 100.0)
        else:
            new = v * (1.0 + size)
    else:  # memory leak: linear climb, then the restart brings memory back to normal
        climb = inc.factor * np.arange(1, v.size + 1) / v.size
        new = np.minimum(v + climb, 99.0)
    values[inc.service, inc.metric, window] = new


def _draw_present(
    rng: np.random.Generator, n_services: int, n_steps: int, incidents: list[_Incident]
) -> np.ndarray:
    """Which rows exist: (service, metric, step) booleans with short gaps outside incidents."""
    longest = int(_GAP_LENGTHS.max())
    blocked = np.zeros((n_services, n_steps), dtype=bool)
    for inc in incidents:
        blocked[inc.service, inc.begin : inc.end] = True
    # A gap of the longest length starting at s covers s .. s + longest - 1; the
    # first and last step stay so that every series spans the whole timeline.
    starts = np.arange(1, n_steps - longest)
    free = np.ones((n_services, starts.size), dtype=bool)
    for j in range(longest):
        free &= ~blocked[:, starts + j]

    n_gaps = max(1, round(_MISSING_FRACTION * n_steps / _GAP_LENGTHS.mean()))
    present = np.ones((n_services, len(METRICS), n_steps), dtype=bool)
    for service in range(n_services):
        candidates = starts[free[service]]
        for metric in range(len(METRICS)):
            chosen = rng.choice(candidates, size=min(n_gaps, candidates.size), replace=False)
            lengths = rng.choice(_GAP_LENGTHS, size=chosen.size)
            offsets = np.arange(longest)
            rows = (chosen[:, None] + offsets)[offsets < lengths[:, None]]
            present[service, metric, rows] = False
    return present


def _assemble(
    values: np.ndarray, labels: np.ndarray, present: np.ndarray, times_ns: np.ndarray
) -> pd.DataFrame:
    """Flatten (service, metric, step) arrays into the sorted long frame."""
    n_services, n_metrics, n_steps = values.shape
    names = np.array(_service_names(n_services), dtype=object)
    service_order = np.argsort(names, kind="stable")
    metric_order = np.argsort(np.array(METRICS, dtype=object), kind="stable")
    order = np.ix_(service_order, metric_order)

    keep = present[order].ravel()
    kind_codes = labels[order].ravel()[keep]
    services = np.repeat(names[service_order], n_metrics * n_steps)[keep]
    metrics = np.tile(
        np.repeat(np.array(METRICS, dtype=object)[metric_order], n_steps), n_services
    )[keep]
    stamps = np.tile(times_ns, n_services * n_metrics)[keep]
    kind_names = np.array(["", *INCIDENT_KINDS], dtype=object)

    return pd.DataFrame(
        {
            TIMESTAMP: pd.to_datetime(stamps, unit="ns", utc=True),
            SERVICE: pd.array(services, dtype="str"),
            METRIC: pd.array(metrics, dtype="str"),
            VALUE: values[order].ravel()[keep].astype(np.float64, copy=False),
            IS_ANOMALY: kind_codes >= 0,
            INCIDENT: pd.array(kind_names[kind_codes.astype(np.int64) + 1], dtype="str"),
        }
    )


_TABLE_COLUMNS = (SERVICE, INCIDENT, "start", "end", "metrics")


def incident_table(frame: pd.DataFrame) -> pd.DataFrame:
    """List the labelled incidents of a fleet frame, one row per incident.

    An incident is a maximal run of consecutive labelled rows of one series
    (service and metric) with the same kind; runs of different metrics of the
    same service and kind that overlap in time are one incident.

    Parameters
    ----------
    frame : pandas.DataFrame
        Long-format metrics with columns ``timestamp``, ``service``, ``metric``,
        ``is_anomaly`` and ``incident``, as returned by :func:`generate_fleet`;
        any row order.

    Returns
    -------
    pandas.DataFrame
        Columns ``service``, ``incident`` (the kind), ``start`` and ``end`` (first
        and last labelled timestamp, both inclusive) and ``metrics`` (the
        labelled metrics, sorted and comma-joined), sorted by service and start.

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    required = (TIMESTAMP, SERVICE, METRIC, IS_ANOMALY, INCIDENT)
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; incident_table needs {list(required)}")
    rows = frame.loc[:, list(required)].sort_values(
        [SERVICE, METRIC, TIMESTAMP], kind="stable", ignore_index=True
    )
    labelled = rows[IS_ANOMALY].to_numpy(dtype=bool)
    if not labelled.any():
        return pd.DataFrame(
            {
                SERVICE: pd.array([], dtype="str"),
                INCIDENT: pd.array([], dtype="str"),
                "start": pd.to_datetime(np.array([], dtype=np.int64), unit="ns", utc=True),
                "end": pd.to_datetime(np.array([], dtype=np.int64), unit="ns", utc=True),
                "metrics": pd.array([], dtype="str"),
            }
        )

    # A run starts wherever the series, the label or the kind changes.
    kind = rows[INCIDENT].astype(str).where(labelled, "\x00normal")
    run_start = (
        (rows[SERVICE] != rows[SERVICE].shift())
        | (rows[METRIC] != rows[METRIC].shift())
        | (kind != kind.shift())
    )
    rows["_run"] = run_start.cumsum()
    runs = (
        rows[labelled]
        .groupby("_run", sort=False)
        .agg(
            service=(SERVICE, "first"),
            incident=(INCIDENT, "first"),
            metric=(METRIC, "first"),
            start=(TIMESTAMP, "min"),
            end=(TIMESTAMP, "max"),
        )
        .sort_values([SERVICE, INCIDENT, "start"], kind="stable", ignore_index=True)
    )

    # Merge overlapping runs of one service and kind: a run opens a new incident
    # when it starts after every earlier run of its group has ended.
    group = [runs[SERVICE], runs[INCIDENT]]
    reach = runs.groupby(group, sort=False)["end"].cummax()
    previous_reach = reach.groupby(group, sort=False).shift()
    opens = previous_reach.isna() | (runs["start"] > previous_reach)
    runs["_incident"] = opens.cumsum()
    table = (
        runs.groupby("_incident", sort=False)
        .agg(
            service=(SERVICE, "first"),
            incident=(INCIDENT, "first"),
            start=("start", "min"),
            end=("end", "max"),
            metrics=("metric", lambda names: ",".join(sorted(set(names)))),
        )
        .sort_values([SERVICE, "start"], kind="stable", ignore_index=True)
    )
    table = table.loc[:, list(_TABLE_COLUMNS)]
    for column in (SERVICE, INCIDENT, "metrics"):
        table[column] = table[column].astype("str")
    return table
