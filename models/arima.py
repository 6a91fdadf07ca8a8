"""ARIMA detector: standardised one-step-ahead prediction errors of a seasonal profile + ARIMA.

A full SARIMA at a season of 288 or 1440 steps is far too slow to fit per
series, so the series is decomposed first, as in STL + ARIMA:

1. the seasonal profile of the dynamic threshold (:mod:`models.thresholds`:
   the same season choice, ``"none"``, ``"1D"``, ``"workweek"`` or ``"7D"``,
   and the same per-slot medians) is subtracted;
2. an ARIMA(p, d, q) is fitted to what remains, with (p, d, q) chosen over a
   small grid by an information criterion.

Scoring holds the fitted parameters fixed and filters the window through the
innovations recursion of the ARMA (``scipy.signal.lfilter``), so a request
never touches statsmodels. See :class:`ArimaDetector` for what happens at the
start of a window and around gaps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from features.series import infer_step
from models.arma import (
    Arma,
    conditional_innovation_sd,
    innovations,
    mle_refine,
    runs,
    segment_starts,
    select_order,
    with_gap_markers,
)
from models.base import Detector, DetectorConfig, register
from models.seasonality import (
    SEASONS,
    choose_season,
    held_out_residuals,
    recent_level,
    robust_scale,
    seasonal_profile,
    slot_index,
    slot_length_ns,
)
from models.thresholds import DynamicThresholdConfig

#: Residuals are clipped at this many robust standard deviations for the fit (not for scoring).
_FIT_CLIP = 10.0
#: With ``level_window``, the weight in points of the fitted mean against the window's own level.
_LEVEL_PRIOR_WEIGHT = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArimaDetectorConfig(DetectorConfig):
    """Seasonal profile plus an ARIMA on the deseasonalised residual.

    Parameters
    ----------
    season
        ``"auto"`` picks the profile as the dynamic threshold does (held-out
        days, see :func:`models.thresholds.detect_season`); ``"none"``,
        ``"1D"``, ``"workweek"`` or ``"7D"`` force one.
    slot_s
        Length in seconds of a profile slot; never finer than the data's step.
    min_improvement
        In ``"auto"``, how much a season must shrink the held-out residual
        spread, as a fraction, to be preferred to no season.
    max_p, max_d, max_q
        The order grid: every (p, d, q) with p ≤ ``max_p``, d ≤ ``max_d``,
        q ≤ ``max_q`` is a candidate.
    criterion
        ``"bic"`` (parsimonious, the default) or ``"aic"`` chooses the order.
    fit_length
        The ARIMA's coefficients are fitted on at most the last ``fit_length``
        observed points of the history, which bounds the fit time; the profile
        and the calibration use all of it.
    level_window
        0: a model with d = 0 predicts around its fitted mean, a pure ARIMA,
        so a lasting level shift keeps scoring high. n > 0 (default 60): the
        mean follows the median of the window's last n residuals instead
        (shrunk toward the fitted mean while the window has little past, as in
        the dynamic threshold), so such a shift stops scoring after about n
        points — one incident, not an alarm for as long as the new level
        lasts. A pure ARIMA keeps alarming on a new level, which is what a
        low-false-positive profile punishes most (figures: benchmarks/README.md,
        "Detection on NAB"). Models with d = 1 follow the level anyway.
    outlier_sd
        An isolated one-step error beyond this many standard deviations scores
        in full, but later predictions use the prediction in its place: a
        spike does not echo into the points after it, and a past incident in
        the history does not inflate the calibration. A second such error in a
        row is accepted as real (a level shift). 0 turns this off: the plain
        ARIMA recursion.
    restart_every
        The recursion starts again from zero state every ``restart_every``
        trained steps, at boundaries fixed by the clock (multiples of
        ``restart_every`` steps since the epoch), not by where a window
        begins. So a point's score depends on at most
        :meth:`ArimaDetector.context_points` rows before it, and a window that
        holds them scores it exactly as any longer window does. An MA part's
        memory fades geometrically, so the default 64 loses nothing measurable
        (figures: benchmarks/README.md).
    """

    season: str = "auto"
    slot_s: int = 300
    min_improvement: float = 0.1
    max_p: int = 2
    max_d: int = 1
    max_q: int = 2
    criterion: Literal["aic", "bic"] = "bic"
    fit_length: int = 3000
    level_window: int = 60
    outlier_sd: float = 4.0
    restart_every: int = 64

    def __post_init__(self) -> None:
        for name in ("slot_s", "max_p", "max_d", "max_q", "fit_length", "level_window",
                     "restart_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}={value!r} must be an integer")
        if self.season not in ("auto", *SEASONS):
            raise ValueError(f"season={self.season!r}; accepted: 'auto', {', '.join(SEASONS)}")
        if not 1 <= self.slot_s <= 86_400:
            raise ValueError(f"slot_s={self.slot_s} must lie in [1, 86400]")
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError(f"min_improvement={self.min_improvement} must lie in [0, 1)")
        if not 0 <= self.max_p <= 5:
            raise ValueError(f"max_p={self.max_p} must lie in [0, 5]")
        if not 0 <= self.max_d <= 1:
            raise ValueError(f"max_d={self.max_d} must lie in [0, 1]")
        if not 0 <= self.max_q <= 5:
            raise ValueError(f"max_q={self.max_q} must lie in [0, 5]")
        if self.criterion not in ("aic", "bic"):
            raise ValueError(f"criterion={self.criterion!r}; accepted: 'aic', 'bic'")
        if not ArimaDetector.min_history_length <= self.fit_length <= 1_000_000:
            raise ValueError(
                f"fit_length={self.fit_length} must lie in "
                f"[{ArimaDetector.min_history_length}, 1000000]"
            )
        if not (self.level_window == 0 or 2 <= self.level_window <= 100_000):
            raise ValueError(f"level_window={self.level_window} must be 0 or lie in [2, 100000]")
        if not (self.outlier_sd == 0 or 2.0 <= self.outlier_sd <= 1000.0):
            raise ValueError(f"outlier_sd={self.outlier_sd} must be 0 or lie in [2, 1000]")
        if not 8 <= self.restart_every <= 100_000:
            raise ValueError(f"restart_every={self.restart_every} must lie in [8, 100000]")


@register
class ArimaDetector(Detector):
    """Standardised one-step-ahead prediction error of a seasonal profile + ARIMA model.

    The value minus its seasonal profile is the residual; an ARIMA(p, d, q)
    (d ∈ {0, 1}, chosen per series) predicts each residual from the past ones,
    and the raw score is ``|error| / sd``, the error in standard deviations of
    its own prediction. Both directions are anomalous. Calibration maps raw
    scores to [0, 1] by their distribution on the training history, so 0.99
    means a one-step surprise seen once in a hundred training points.

    Fitting
        The season and profile are the dynamic threshold's. The ARIMA is fitted
        to the *held-out* residual (each day against a profile built without
        it), which has the spread a new day really shows; in-sample residuals
        against a median of a few values per slot are too tight. The order is
        chosen by conditional sum of squares over the grid; the chosen order is
        refitted by exact maximum likelihood in statsmodels (the CSS estimate
        stands if that fails). Everything is deterministic: no random numbers.

    Scoring
        Parameters stay fixed; the window is filtered through the ARMA's
        innovations recursion (``scipy.signal.lfilter``), never refitted. A
        window is not assumed to follow the training data: the recursion starts
        at the window's first point with zero pre-sample values and errors,
        and each error is divided by its exact standard deviation under that
        start (``γ(0)`` for the first point, converging to sigma²; exactly
        sigma² from point p on for a pure AR). So the first points are neither
        over-scored for a past the recursion cannot see nor dependent on where
        training ended. The recursion also restarts every ``restart_every``
        steps on a clock-fixed grid, so a point's score depends on at most
        :meth:`context_points` rows before it (the points since the last
        restart, and the ``level_window`` before those for the local level):
        any window holding them scores it the same, bit for bit. With d = 1
        the first point of a run has nothing to difference against and is
        compared with the residual's training median and spread instead; the
        differencing goes on across a restart.

    Outliers and level shifts
        An isolated error beyond ``outlier_sd`` standard deviations scores in
        full but is replaced by its prediction in the recursion, so a spike
        does not make the next points look anomalous too (with the plain
        recursion an MA(1) with θ = 0.6 echoes a 30-sigma spike for five
        points); a second one in a row is taken as real. With d = 0 a lasting
        level shift keeps scoring high unless ``level_window`` lets the mean
        follow the window.

    Gaps
        A missing value scores NaN and ends the run; the recursion restarts at
        the next observed point as at a window's start, so nothing imputed is
        ever scored against. A timestamp jump of more than 1.5 trained steps
        restarts it too (lags are counted in steps).

    Edge cases
        A history with no spread fits white noise with a tiny scale: the usual
        value scores 0, any change scores 1. A value so large that the
        arithmetic overflows scores 1. An all-missing window scores all NaN.
    """

    name: ClassVar[str] = "arima"
    config_class = ArimaDetectorConfig
    config: ArimaDetectorConfig
    min_history_length: ClassVar[int] = 30

    @classmethod
    def _test_config(cls) -> ArimaDetectorConfig:
        return ArimaDetectorConfig(max_p=1, max_q=1, fit_length=600)

    # -- fit ------------------------------------------------------------------------------
    def _deseasonalise(
        self, history: pd.Series, step: pd.Timedelta
    ) -> tuple[str, int, np.ndarray, np.ndarray]:
        """Season, slot length, profile and the residual the ARIMA is fitted to."""
        config = self.config
        stamps = history.index.asi8
        values = history.to_numpy(dtype="float64")
        slot_ns = slot_length_ns(step, config.slot_s)
        if config.season == "none" or np.nanmin(values) == np.nanmax(values):
            season = "none"
        elif config.season == "auto":
            choice = DynamicThresholdConfig(
                season="auto", slot_s=config.slot_s, min_improvement=config.min_improvement
            )
            season, _ = choose_season(history, step, choice)
        else:
            season = config.season
        profile = seasonal_profile(stamps, values, season, slot_ns)
        slots, _ = slot_index(stamps, season, slot_ns)
        residual = values - profile[slots]
        if season != "none":
            held_out = held_out_residuals(stamps, values, season, slot_ns)
            # A forced season on less than two cycles has nothing to hold out: stay in-sample.
            if np.isfinite(held_out).sum() >= self.min_history_length:
                residual = held_out
        return season, int(slot_ns), np.asarray(profile, dtype="float64"), residual

    @property
    def trained_step(self) -> pd.Timedelta:
        return pd.Timedelta(self.step_ns_, unit="ns")

    def _fit(self, history: pd.Series) -> None:
        step = infer_step(history.index)
        self.season_, self.slot_ns_, self.profile_, residual = self._deseasonalise(history, step)
        self.step_ns_ = int(step.value)
        # The last fit_length observed points (NaN between them does not count).
        observed = np.flatnonzero(np.isfinite(residual))
        n_fit = self.config.fit_length
        first = int(observed[-n_fit]) if observed.size > n_fit else 0
        whole, whole_stamps = residual, history.index.asi8
        residual, stamps = residual[first:], whole_stamps[first:]
        self.center_ = float(np.nanmedian(residual)) if observed.size else 0.0
        # Robust units (1.4826 MAD, floored for flat data; never overflows as a variance can).
        self.scale_ = robust_scale(residual)
        if not observed.size or np.nanmin(residual) == np.nanmax(residual):
            # Nothing to model; the floored scale makes any real change stand out.
            self._set_model((0, 0, 0), 0.0, np.empty(0), np.empty(0), 1.0, 1.0)
            self.criterion_value_ = None
            self.estimation_ = "constant"
        else:
            z = (residual - self.center_) / self.scale_
            starts = segment_starts(z, stamps, self.step_ns_)
            # Outliers in the history (past incidents) are clipped for the fit only, so that
            # they neither inflate sigma nor pull the coefficients toward zero.
            clipped = np.clip(z, -_FIT_CLIP, _FIT_CLIP)
            order, criterion, mu, ar, ma, sigma2 = select_order(
                runs(clipped, starts), self.config
            )
            refined = mle_refine(with_gap_markers(clipped, starts), order, mu, ar, ma)
            self.estimation_ = "css" if refined is None else "mle"
            if refined is not None:
                mu, ar, ma, sigma2 = refined
            self.criterion_value_ = float(criterion) if np.isfinite(criterion) else None
            self._set_model(order, mu, ar, ma, sigma2, robust_scale(z))
        # Standardised one-step errors of the whole history, for the calibration: the fit span
        # bounds the cost of estimating a few coefficients, but at a fine step it can be shorter
        # than the week (at 1 minute, 3,000 points are a weekend, whose quiet noise would make
        # every busy Monday look rare); filtering the rest with the coefficients is cheap.
        z = (whole - self.center_) / self.scale_
        starts = segment_starts(z, whole_stamps, self.step_ns_)
        raw, _, _, position = innovations(
            z, starts, self._model, self._local_mean(z), self._restarts(whole_stamps, starts)
        )
        p, d, q = self.order_
        raw[position < d + max(p, q)] = np.nan  # burn-in: errors the start of a run still shapes
        self._training_raw = raw

    def _set_model(
        self,
        order: tuple[int, int, int],
        mu: float,
        ar: np.ndarray,
        ma: np.ndarray,
        sigma2: float,
        level_sd: float,
    ) -> None:
        self.order_ = [int(v) for v in order]
        self.mu_ = float(mu)
        self.ar_ = [float(v) for v in ar]
        self.ma_ = [float(v) for v in ma]
        self.sigma2_ = float(sigma2)
        self.level_sd_ = float(level_sd)
        self.innovation_sd_ = conditional_innovation_sd(
            np.asarray(self.ar_), np.asarray(self.ma_), self.sigma2_
        )
        self._model = self._build_model()

    def _build_model(self) -> Arma:
        return Arma(
            d=self.order_[1],
            mu=self.mu_,
            ar=tuple(self.ar_),
            ma=tuple(self.ma_),
            sigma2=self.sigma2_,
            level_sd=self.level_sd_,
            innovation_sd=self.innovation_sd_,
            outlier_sd=float(self.config.outlier_sd),
        )

    def _local_mean(self, z: np.ndarray) -> np.ndarray | None:
        """The d = 0 model's mean per point under ``level_window`` (None: the fitted mean)."""
        if self.config.level_window == 0 or self._model.d != 0:
            return None
        return recent_level(z, self.config.level_window, _LEVEL_PRIOR_WEIGHT, self.mu_)

    def _restarts(self, stamps: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Where the recursion restarts inside a run: the clock grid of ``restart_every`` steps.

        A point starts a new block where ``stamp // (restart_every · step)``
        changes; where a block holds more rows than that (a series sampled
        finer than it was trained), every ``restart_every``-th row since the
        block's start, a run start or the window's first row restarts too.
        """
        every = self.config.restart_every
        block = np.floor_divide(stamps, every * self.step_ns_)
        change = np.r_[False, block[1:] != block[:-1]]
        begins = change | starts
        begins[:1] = True
        group_start = np.maximum.accumulate(np.where(begins, np.arange(len(stamps)), 0))
        since = np.arange(len(stamps)) - group_start
        return change | ((since > 0) & (since % every == 0))

    def context_points(self) -> int:
        return self.config.restart_every + self.config.level_window + 1

    def _training_raw_scores(self, history: pd.Series) -> np.ndarray:
        raw, self._training_raw = self._training_raw, None
        return raw

    # -- score ----------------------------------------------------------------------------
    def _filter(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw score, one-step prediction and its sd (original units) per window point."""
        stamps = window.index.asi8
        values = window.to_numpy(dtype="float64")
        slots, _ = slot_index(stamps, self.season_, self.slot_ns_)
        baseline = self.profile_[slots] + self.center_
        with np.errstate(over="ignore", invalid="ignore"):
            z = (values - baseline) / self.scale_
            starts = segment_starts(z, stamps, self.step_ns_)
            mean = self._local_mean(z)
            raw, prediction, sd, _ = innovations(
                z, starts, self._model, mean, self._restarts(stamps, starts)
            )
        # A finite value whose arithmetic overflowed is as far from normal as it gets.
        raw[np.isfinite(values) & ~np.isfinite(raw)] = np.inf
        # Where there is no prediction (a missing value), the range of a run's first point.
        no_past = np.isnan(prediction)
        if self._model.d == 1:
            prediction[no_past], sd[no_past] = 0.0, self._model.level_sd
        else:
            level = self._model.mu if mean is None else mean[no_past]
            prediction[no_past], sd[no_past] = level, self.innovation_sd_[0]
        return raw, baseline + self.scale_ * prediction, self.scale_ * sd

    def _score_z(self, window: pd.Series) -> np.ndarray:
        raw, _, _ = self._filter(window)
        return raw

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        _, expected, sd = self._filter(window)
        return expected - raw_threshold * sd, expected + raw_threshold * sd

    # -- state: the default get_state; loading checks the order and rebuilds the filter ------
    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.season_ = str(params["season_"])
        self.slot_ns_ = int(params["slot_ns_"])
        self.step_ns_ = int(params["step_ns_"])
        self.center_ = float(params["center_"])
        self.scale_ = float(params["scale_"])
        self.order_ = [int(v) for v in params["order_"]]
        self.mu_ = float(params["mu_"])
        self.ar_ = [float(v) for v in params["ar_"]]
        self.ma_ = [float(v) for v in params["ma_"]]
        self.sigma2_ = float(params["sigma2_"])
        self.level_sd_ = float(params["level_sd_"])
        value = params.get("criterion_value_")
        self.criterion_value_ = None if value is None else float(value)
        self.estimation_ = str(params["estimation_"])
        self.profile_ = np.asarray(arrays["profile_"], dtype="float64")
        self.innovation_sd_ = np.asarray(arrays["innovation_sd_"], dtype="float64")
        p, d, q = self.order_
        if len(self.ar_) != p or len(self.ma_) != q or d not in (0, 1):
            raise ValueError(f"order_={self.order_} does not match ar_={self.ar_}, ma_={self.ma_}")
        self._model = self._build_model()

