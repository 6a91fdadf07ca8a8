"""The ARMA arithmetic of the ARIMA detector: the innovations recursion and the order's fit.

Scoring filters a window through the innovations recursion of a fitted ARMA
(``scipy.signal.lfilter``), each error divided by its exact standard deviation
under a zero pre-sample start (:func:`conditional_innovation_sd`); a spike is
replaced by its prediction so that it does not echo. Fitting chooses (p, d, q)
over a small grid by conditional sum of squares on the runs between gaps
(:func:`select_order`) and refines the chosen order by exact maximum
likelihood in statsmodels (:func:`mle_refine`). See
:class:`models.arima.ArimaDetector` for what the detector builds on them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
from scipy import linalg, optimize, signal
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.arima_process import arma_acovf
from statsmodels.tsa.statespace.tools import constrain_stationary_univariate
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from models.arima import ArimaDetectorConfig

_log = logging.getLogger(__name__)

#: Positions from a segment's start for which the variance of the conditional innovations is
#: tabulated; beyond it the last value is used (it has converged to sigma² by then unless an MA
#: root sits almost on the unit circle).
_N_VARIANCE_POSITIONS = 256
#: A timestamp step longer than this many trained steps is a gap: the recursion restarts after it.
_JUMP_FACTOR = 1.5
#: Iterations of the statsmodels likelihood maximisation; it starts from the CSS estimates.
_MLE_MAXITER = 50


# -- the innovations recursion ------------------------------------------------------------
def segment_starts(z: np.ndarray, stamps_ns: np.ndarray, step_ns: int) -> np.ndarray:
    """True where a run of consecutive observed points begins.

    A run ends at a missing (non-finite) value and at a timestamp jump of more
    than ``_JUMP_FACTOR`` steps; the recursion restarts at every run's start.
    """
    observed = np.isfinite(z)
    previous_observed = np.r_[False, observed[:-1]]
    jump = np.r_[True, np.diff(stamps_ns) > _JUMP_FACTOR * step_ns]
    return observed & (~previous_observed | jump)


def innovations(
    z: np.ndarray,
    starts: np.ndarray,
    model: Arma,
    mean: np.ndarray | None = None,
    restarts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-step errors of ``model`` over ``z``, restarting at every run start.

    ``mean`` replaces the fitted mean of a d = 0 model point by point (a local
    level computed from the past only). ``restarts`` marks points inside a run
    where the recursion starts again from zero state (the differencing of a
    d = 1 model goes on across them), which bounds how far back a point's
    error depends on the past. Returns the raw score ``|error| / sd``, the
    one-step prediction, the prediction's standard deviation (all in the units
    of ``z``) and each point's position since its run start or restart (the
    first difference of a d = 1 model is at position 1); NaN (position -1)
    where ``z`` is not finite.
    """
    n = len(z)
    raw, prediction, sd = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    position = np.full(n, -1, dtype=np.int64)
    begins = np.flatnonzero(starts)
    if begins.size == 0:
        return raw, prediction, sd, position
    stops = np.r_[np.flatnonzero(~np.isfinite(z) | starts), n]
    ends = stops[np.searchsorted(stops, begins, side="right")]
    marked = np.flatnonzero(restarts) if restarts is not None else np.empty(0, dtype=np.int64)
    last = len(model.innovation_sd) - 1
    for a, b in zip(begins.tolist(), ends.tolist(), strict=True):
        first = a
        if model.d == 1:
            # The first point of a run has no predecessor to difference against: it is compared
            # with the training distribution of the residual (median 0 in z units).
            prediction[a], sd[a], position[a] = 0.0, model.level_sd, 0
            first = a + 1
            w = np.diff(z[a:b])
        else:
            w = z[a:b] - (model.mu if mean is None else mean[a:b])
        inside = marked[(marked > first) & (marked < b)].tolist()
        # Conditional on zero pre-sample values and errors; innovation_sd[k] is the exact
        # standard deviation of the k-th such error, so the first points after a (re)start are
        # not over-scored for the pre-sample the recursion cannot see.
        for c0, c1 in itertools.pairwise([first, *inside, b]):
            if c1 <= c0:
                continue
            run_sd = model.innovation_sd[np.minimum(np.arange(c1 - c0), last)]
            errors = _run_errors(w[c0 - first:c1 - first], run_sd, model)
            prediction[c0:c1] = z[c0:c1] - errors
            sd[c0:c1] = run_sd
            position[c0:c1] = model.d + np.arange(c1 - c0)
    raw = np.abs(z - prediction) / sd
    return raw, prediction, sd, position


def _run_errors(w: np.ndarray, sd: np.ndarray, model: Arma) -> np.ndarray:
    """One-step errors of the ARMA over one run of (differenced, centred) values ``w``.

    ``scipy.signal.lfilter`` runs the recursion. An *isolated* error beyond
    ``model.outlier_sd`` standard deviations is returned in full, but the
    recursion goes on with the prediction in place of the value (error 0), so
    a spike leaves no echo in the next points' predictions. A second such
    error in a row is taken as real and fed back in full, so a level shift is
    followed (by a model with d = 1) rather than rejected forever. For d = 1 the
    replaced value is a level: the next difference takes back what was
    removed. From the first outlier on, a scalar loop runs the recursion: for
    a few hundred points it is as fast as lfilter would be with restarts.
    """
    errors = signal.lfilter(model.ar_poly, model.ma_poly, w)
    if model.outlier_sd <= 0:
        return errors
    outliers = np.flatnonzero(np.abs(errors) > model.outlier_sd * sd)
    if outliers.size == 0:
        return errors
    ar, ma, d = model.ar, model.ma, model.d
    values, reported = w.tolist(), errors.tolist()
    bounds = (model.outlier_sd * sd).tolist()
    fed_back = list(reported)  # the errors the MA part sees: 0 for a rejected value
    n = len(values)
    after_outlier = False  # whether the point before was an outlier
    for t in range(int(outliers[0]), n):
        predicted = 0.0
        for i, coefficient in enumerate(ar, start=1):
            if t >= i:
                predicted += coefficient * values[t - i]
        for i, coefficient in enumerate(ma, start=1):
            if t >= i:
                predicted += coefficient * fed_back[t - i]
        error = values[t] - predicted
        reported[t] = fed_back[t] = error
        is_outlier = abs(error) > bounds[t]
        if is_outlier and not after_outlier:
            fed_back[t] = 0.0
            values[t] = predicted
            if d == 1 and t + 1 < n:
                values[t + 1] += error
        after_outlier = is_outlier
    return np.asarray(reported)


@dataclasses.dataclass(frozen=True)
class Arma:
    """Fixed ARIMA(p, d, q) parameters in standardised units, ready for the recursion."""

    d: int
    mu: float
    ar: tuple[float, ...]
    ma: tuple[float, ...]
    sigma2: float
    level_sd: float
    innovation_sd: np.ndarray
    outlier_sd: float

    @property
    def ar_poly(self) -> np.ndarray:
        return np.r_[1.0, -np.asarray(self.ar, dtype="float64")]

    @property
    def ma_poly(self) -> np.ndarray:
        return np.r_[1.0, np.asarray(self.ma, dtype="float64")]


def conditional_innovation_sd(
    ar: np.ndarray, ma: np.ndarray, sigma2: float, n_positions: int = _N_VARIANCE_POSITIONS
) -> np.ndarray:
    """Standard deviation of the k-th conditional (zero pre-sample) one-step error.

    With zero initial state the errors are ``e = H w`` for the impulse response
    ``H`` of ``ar(B) / ma(B)`` and a stationary ARMA ``w`` with autocovariance
    matrix ``Γ``; their variances are ``diag(H Γ Hᵀ)``: ``γ(0)`` for the first
    point, sigma² exactly from position p on for a pure AR, converging
    geometrically to sigma² with an MA part.
    """
    ar_poly, ma_poly = np.r_[1.0, -ar], np.r_[1.0, ma]
    impulse = np.zeros(n_positions)
    impulse[0] = 1.0
    h = signal.lfilter(ar_poly, ma_poly, impulse)
    big_h = linalg.toeplitz(h, np.zeros(n_positions))
    gamma = linalg.toeplitz(arma_acovf(ar_poly, ma_poly, nobs=n_positions, sigma2=sigma2))
    variance = np.einsum("ij,ij->i", big_h @ gamma, big_h)
    # Never below sigma² (no predictor from a finite past beats the model's own innovations);
    # the clip only removes rounding where a near-unit root makes Γ large.
    variance = np.where(np.isfinite(variance), np.maximum(variance, sigma2), sigma2)
    return np.sqrt(variance)


# -- order selection and fitting ----------------------------------------------------------
def runs(z: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    begins = np.flatnonzero(starts)
    stops = np.r_[np.flatnonzero(~np.isfinite(z) | starts), len(z)]
    ends = stops[np.searchsorted(stops, begins, side="right")]
    return [z[a:b] for a, b in zip(begins.tolist(), ends.tolist(), strict=True)]


def with_gap_markers(z: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``z`` with a NaN before every run that follows a timestamp jump, for the Kalman fit."""
    jumps = np.flatnonzero(starts[1:] & np.isfinite(z[:-1])) + 1
    return np.insert(z, jumps, np.nan) if jumps.size else z


def _css_errors(
    params: np.ndarray, runs: list[np.ndarray], p: int, d: int, q: int, n_condition: int
) -> np.ndarray:
    """Conditional one-step errors from position ``n_condition`` of every run on."""
    offset = 1 if d == 0 else 0
    mu = params[0] if d == 0 else 0.0
    ar = constrain_stationary_univariate(params[offset : offset + p]) if p else np.empty(0)
    # An invertible MA polynomial 1 + θB is a stationary AR polynomial in −θ.
    ma = -constrain_stationary_univariate(params[offset + p :]) if q else np.empty(0)
    ar_poly, ma_poly = np.r_[1.0, -ar], np.r_[1.0, ma]
    out = []
    for run in runs:
        if run.size <= n_condition:
            continue
        w = np.diff(run) if d == 1 else run - mu
        errors = signal.lfilter(ar_poly, ma_poly, w)
        out.append(errors[max(n_condition - d, 0) :])
    return np.concatenate(out) if out else np.empty(0)


def _css_fit(
    runs: list[np.ndarray], p: int, d: int, q: int, n_condition: int
) -> tuple[np.ndarray, float, int] | None:
    """Conditional-sum-of-squares estimate: (unconstrained params, sigma², n errors) or None."""
    n_params = p + q + (1 if d == 0 else 0)
    start = np.zeros(n_params)
    if d == 0:
        start[0] = float(np.mean(np.concatenate(runs)))
    n_errors = _css_errors(start, runs, p, d, q, n_condition).size
    if n_errors < max(10, 3 * (n_params + 1)):
        return None
    if p + q:
        result = optimize.least_squares(
            _css_errors, start, args=(runs, p, d, q, n_condition), method="lm"
        )
        if not np.all(np.isfinite(result.x)):
            return None
        params = result.x
    else:
        params = start
    errors = _css_errors(params, runs, p, d, q, n_condition)
    sigma2 = float(np.mean(errors**2))
    if not (np.isfinite(sigma2) and sigma2 > 0):
        return None
    return params, sigma2, errors.size


def _unpack(params: np.ndarray, p: int, d: int, q: int) -> tuple[float, np.ndarray, np.ndarray]:
    offset = 1 if d == 0 else 0
    mu = float(params[0]) if d == 0 else 0.0
    ar = constrain_stationary_univariate(params[offset : offset + p]) if p else np.empty(0)
    ma = -constrain_stationary_univariate(params[offset + p :]) if q else np.empty(0)
    return mu, ar, ma


def select_order(
    runs: list[np.ndarray], config: ArimaDetectorConfig
) -> tuple[tuple[int, int, int], float, float, np.ndarray, np.ndarray, float]:
    """The (p, d, q) with the lowest information criterion under CSS estimation.

    Every candidate is conditioned on the same first ``max_p + max_d`` points of
    every run, so the criteria compare likelihoods of the same observations.
    Candidates are visited from simplest to most complex and a more complex
    one must be strictly better, so ties go to the simpler order.
    """
    n_condition = config.max_p + config.max_d
    best: tuple[float, tuple[int, int, int], np.ndarray, float] | None = None
    candidates = sorted(
        (
            (p, d, q)
            for p in range(config.max_p + 1)
            for d in range(config.max_d + 1)
            for q in range(config.max_q + 1)
        ),
        key=lambda order: (sum(order), order[1], order[0]),
    )
    for p, d, q in candidates:
        fitted = _css_fit(runs, p, d, q, n_condition)
        if fitted is None:
            continue
        params, sigma2, n_errors = fitted
        n_estimated = p + q + (1 if d == 0 else 0) + 1
        log_likelihood = -0.5 * n_errors * (math.log(2.0 * math.pi * sigma2) + 1.0)
        penalty = 2.0 if config.criterion == "aic" else math.log(n_errors)
        criterion = -2.0 * log_likelihood + penalty * n_estimated
        if best is None or criterion < best[0]:
            best = (criterion, (p, d, q), params, sigma2)
    if best is None:
        # Too little data for any candidate with parameters: white noise around the median.
        return (0, 0, 0), float("nan"), 0.0, np.empty(0), np.empty(0), 1.0
    criterion, (p, d, q), params, sigma2 = best
    mu, ar, ma = _unpack(params, p, d, q)
    return (p, d, q), criterion, mu, ar, ma, sigma2


def mle_refine(
    z: np.ndarray,
    order: tuple[int, int, int],
    mu: float,
    ar: np.ndarray,
    ma: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray, float] | None:
    """Exact maximum likelihood (statsmodels, Kalman filter) from the CSS start; None on failure.

    Returns ``(mu, ar, ma, sigma2)``.
    """
    p, d, q = order
    trend = "c" if d == 0 else "n"
    # sigma² is concentrated out of the likelihood: one parameter fewer to search, the
    # same optimum, about half the time of the full search.
    start = np.r_[[mu] if d == 0 else [], ar, ma]
    # The Kalman filter's matrices are tiny: BLAS threads only add overhead, and on a busy
    # machine their spinning made one fit 30 times slower.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # Convergence and start-parameter warnings: the CSS estimate stands if the MLE fails.
        warnings.simplefilter("ignore")
        try:
            model = ARIMA(z, order=(p, d, q), trend=trend, concentrate_scale=True)
            result = model.fit(
                start_params=start,
                method_kwargs={"maxiter": _MLE_MAXITER, "disp": 0},
                cov_type="none",
            )
            params, scale = np.asarray(result.params, dtype="float64"), float(result.scale)
        except (ValueError, np.linalg.LinAlgError) as error:
            _log.debug("ARIMA%s maximum likelihood failed: %s", order, error)
            return None
    if not (np.all(np.isfinite(params)) and np.isfinite(scale) and scale > 0):
        return None
    offset = 1 if d == 0 else 0
    mle_mu = float(params[0]) if d == 0 else 0.0
    mle_ar, mle_ma = params[offset : offset + p], params[offset + p : offset + p + q]
    return mle_mu, mle_ar, mle_ma, scale
