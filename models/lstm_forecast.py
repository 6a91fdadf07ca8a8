"""LSTM forecaster: one global network forecasts every step of the horizon at once, with quantiles.

A multi-horizon direct model in the manner of MQ-RNN. An LSTM *encoder*
reads the last ``context`` steps before the forecast origin (per step: the
normalised value, an observed flag, the sine and cosine of the time of day,
exactly as the LSTM detector's network sees them, :mod:`models.lstm`). A
*decoder* shared by all distances ahead, a small MLP, takes the encoder's
final state and features of one target step and returns its three quantiles
(0.1, 0.5, 0.9). The target's features:

- the seasonal naive value (one season before the target, the season
  detected from the data as for every forecaster), raw and smoothed over
  five steps, and the smoothed value two seasons before;
- how far the level at the origin lies from the level one season before it,
  and the last observed value;
- the target's time of day (sine, cosine) and a weekend flag, the distance
  ahead as a fraction of ``train_horizon``, whether the series has a season
  and whether its seasonal naive value was observed.

Everything is in units normalised per window: centred on the context's
median and divided by its robust spread, never less than the series' own
robust spread (see :func:`models.lstm_shared.normalise`). The network predicts
*offsets* from the smoothed seasonal naive value, and starts at zero offset,
so training begins where the seasonal naive rule is; quantiles are built as
``q50 − softplus(·) ≤ q50 ≤ q50 + softplus(·)`` and never cross. Loss: the
pinball (quantile) loss summed over the three quantiles.

Global: :func:`fit_global` trains ONE network on windows pooled from many
series (each normalised by its own scale, with its own season) and returns
one forecaster per series, each with a copy of the network and its own
scale, season and calibration. ``LstmForecaster.fit`` is the same code path
with one series.

Held-out tail: the most recent ``validation_fraction`` of each history is
kept out of training; the network of the epoch with the lowest held-out loss
is kept, and (optionally, ``calibrate=True``) the [q10, q90] interval is widened or
narrowed around q50 by one factor per distance-ahead bucket so that it
covers 80 % of the held-out values.

``torch`` is imported only when a network is built, trained, run, saved or
loaded, so that ``import models`` stays light.

The module stays whole: windows, network, training and forecaster are one
algorithm whose private types (``_Series``, ``_Batch``, ``_Prepared``) a split
would only make public; what it shares with the detector is in
:mod:`models.lstm_shared`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from models.base import ModelFormatError, check_int
from models.catalog import register
from models.contract import check_float
from models.forecast import (
    _HORIZON_BUCKETS,
    _WEEK,
    QUANTILE_COLUMNS,
    QUANTILES,
    Forecaster,
    ForecasterConfig,
)
from models.lstm_shared import (
    DAY_NS,
    INPUT_CLIP,
    N_INPUTS,
    NETWORK_FILE,
    context_matrix,
    normalise,
    read_network_state,
    scale_floor,
    torch_settings,
)
from models.seasonality import robust_scale

if TYPE_CHECKING:
    import torch
    from torch import nn

    class LstmForecastNetwork(nn.Module):
        hidden_size: int

        def __init__(self, *, hidden_size: int = 32) -> None: ...

        def forward(self, inputs: torch.Tensor, features: torch.Tensor) -> torch.Tensor: ...

_log = logging.getLogger(__name__)

#: Features of one target step the decoder sees (see the module docstring).
N_FEATURES = 12
#: Fewest training and held-out windows (forecast origins) a series must offer.
MIN_TRAIN_WINDOWS = 50
MIN_VALIDATION_WINDOWS = 10
#: Distances ahead drawn per training window: the decoder is shared by all distances, so a
#: sample of them teaches it as well as all ``train_horizon`` and costs a fraction.
_TARGETS_PER_WINDOW = 48
#: Held-out windows per series (every distance ahead of each is scored).
_VALIDATION_WINDOWS = 200
#: Half-width, in steps, of the smoothing of seasonal naive values.
_SMOOTH = 2
#: Training errors are clipped to this magnitude (normalised units) so that a value that
#: overflowed the normalisation cannot turn the loss into NaN.
_ERROR_CLIP = 1.0e3
#: Fewest held-out targets a distance-ahead bucket needs for its own calibration factor.
_MIN_BUCKET_TARGETS = 30
#: Calibration factors are kept within these bounds.
_CALIBRATION_BOUNDS = (0.25, 8.0)
_INFERENCE_BATCH = 256
#: Largest offset of q50 from the smoothed seasonal naive value, in normalised units. Unbounded,
#: a global network can run away after an unusual context (a level shift and a spike at the
#: origin) and forecast far from anything the series did; the bound rules that out and still
#: leaves room for any move the seasonal value does not explain.
_MAX_OFFSET = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LstmForecasterConfig(ForecasterConfig):
    """Hyperparameters of :class:`LstmForecaster` (and of :func:`fit_global`).

    Parameters
    ----------
    max_horizon
        Longest forecast served, in steps; at most ``train_horizon``.
    context
        Steps the encoder reads before the origin.
    train_horizon
        Longest distance ahead the network is trained for, in steps.
    hidden_size
        Size of the LSTM state (the decoder's hidden layer is twice as wide).
        Fixes the architecture: a saved network must have been built with it.
    epochs
        Passes over the training windows; the epoch with the lowest held-out
        loss is kept.
    batch_size, learning_rate
        Mini-batch size (windows) and Adam's step size.
    n_windows
        Forecast origins sampled from each series' training part.
    validation_fraction
        Most recent share of each history held out: selects the epoch and
        calibrates the interval.
    calibrate
        Rescale [q10, q90] around q50 per distance-ahead bucket to cover 80 %
        of the held-out values. Off by default: it assumes the held-out tail is
        like the days that follow, and where it is not (a short history whose
        last fifth is unusual) it widens the interval far past 80 %, while the
        quantile loss alone already comes close; the median is unchanged
        (figures in benchmarks/README.md, "Forecasting").
    seed
        Seeds the weights, the sampling of windows and the shuffling.
    """

    max_horizon: int = 288
    context: int = 96
    train_horizon: int = 288
    hidden_size: int = 32
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 3e-3
    n_windows: int = 2000
    validation_fraction: float = 0.2
    calibrate: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("context", self.context, 2, 10_000)
        check_int("train_horizon", self.train_horizon, 1, 10_000)
        if self.max_horizon > self.train_horizon:
            raise ValueError(
                f"max_horizon={self.max_horizon} exceeds train_horizon={self.train_horizon}: "
                "the network forecasts only as far ahead as it was trained; raise "
                "train_horizon or lower max_horizon"
            )
        check_int("hidden_size", self.hidden_size, 1, 1024)
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("batch_size", self.batch_size, 1, 100_000)
        check_float("learning_rate", self.learning_rate, 0.0, 1.0, open_low=True)
        check_int("n_windows", self.n_windows, MIN_TRAIN_WINDOWS, 10_000_000)
        check_float("validation_fraction", self.validation_fraction, 0.05, 0.5, open_low=False)
        if not isinstance(self.calibrate, bool):
            raise TypeError(f"calibrate must be a bool, got {type(self.calibrate).__name__}")
        check_int("seed", self.seed, 0, 2**32 - 1)


@functools.cache
def network_class() -> type[LstmForecastNetwork]:
    """The network's class; importing torch and defining it on the first call."""
    import torch
    from torch import nn

    class LstmForecastNetwork(nn.Module):
        """Encoder over the context, decoder shared by every target step.

        ``inputs`` ``(batch, context, 4)`` and ``features`` ``(batch, targets,
        N_FEATURES)`` float32; output ``(batch, targets, 3)``: the offsets of
        q10 ≤ q50 ≤ q90 from the target's baseline, in normalised units.
        """

        def __init__(self, *, hidden_size: int = 32) -> None:
            super().__init__()
            self.hidden_size = hidden_size
            self.encoder = nn.LSTM(input_size=N_INPUTS, hidden_size=hidden_size,
                                   batch_first=True)
            self.decoder = nn.Sequential(
                nn.Linear(hidden_size + N_FEATURES, 2 * hidden_size),
                nn.ReLU(),
                nn.Linear(2 * hidden_size, 3),
            )
            # Zero offset from the baseline at the start, and half a unit either side.
            last = self.decoder[-1]
            nn.init.zeros_(last.weight)
            with torch.no_grad():
                last.bias.copy_(torch.tensor([0.0, math.log(math.expm1(0.5)),
                                              math.log(math.expm1(0.5))]))

        def forward(self, inputs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.encoder(inputs)
            state = hidden[-1].unsqueeze(1).expand(-1, features.shape[1], -1)
            out = self.decoder(torch.cat([state, features], dim=2))
            # Bounded: a context unlike any in training cannot throw the forecast far off.
            mid = _MAX_OFFSET * torch.tanh(out[..., 0] / _MAX_OFFSET)
            below = nn.functional.softplus(out[..., 1])
            above = nn.functional.softplus(out[..., 2])
            return torch.stack([mid - below, mid, mid + above], dim=2)

    return LstmForecastNetwork


# -- windows ------------------------------------------------------------------------------
@dataclasses.dataclass
class _Series:
    """One series on its regular grid, with what its windows need."""

    values: np.ndarray  # float64, NaN for gaps
    start_ns: int
    step_ns: int
    period: int  # steps in one season, 1 without
    floor: float  # the smallest normalisation scale


@dataclasses.dataclass
class _Batch:
    """Windows (forecast origins) with their targets, all in normalised units."""

    inputs: np.ndarray  # (b, context, N_INPUTS) float32
    features: np.ndarray  # (b, t, N_FEATURES) float32
    base: np.ndarray  # (b, t) the smoothed seasonal naive value each offset is added to
    target: np.ndarray  # (b, t) NaN where unknown
    reference: np.ndarray  # (b,) in the series' units
    scale: np.ndarray  # (b,)
    ahead: np.ndarray  # (b, t) distance ahead, in steps

    @staticmethod
    def concat(batches: list[_Batch]) -> _Batch:
        return _Batch(*(np.concatenate([getattr(b, f.name) for b in batches])
                        for f in dataclasses.fields(_Batch)))


def _smoothed(cumsum: np.ndarray, counts: np.ndarray, at: np.ndarray, cutoff: np.ndarray
              ) -> np.ndarray:
    """Mean of the finite values in ``[at − _SMOOTH, min(at + _SMOOTH, cutoff)]`` (NaN if none)."""
    low = np.clip(at - _SMOOTH, 0, len(cumsum) - 1)
    high = np.clip(np.minimum(at + _SMOOTH, cutoff) + 1, 0, len(cumsum) - 1)
    n = counts[high] - counts[low]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (cumsum[high] - cumsum[low]) / n
    return np.where((n > 0) & (at >= 0), mean, np.nan)


def _windows(series: _Series, origins: np.ndarray, ahead: np.ndarray, config: LstmForecasterConfig,
             cutoff: int | None = None) -> _Batch:
    """The windows ending at ``origins`` (last observed position) with targets ``ahead`` steps on.

    Targets at or after position ``cutoff`` are unknown (NaN): the held-out tail.
    """
    values, m = series.values, series.period
    n = len(values)
    padded = np.append(values, np.nan)  # the encoder's window ends at origin + 1, possibly n
    phase = ((series.start_ns + series.step_ns * np.arange(n + 1)) % DAY_NS) / DAY_NS
    windows = normalise(context_matrix(padded, origins + 1, config.context), padded, origins + 1,
                         series.floor, phase)
    finite = np.isfinite(values)
    counts = np.concatenate([[0], np.cumsum(finite)])
    cumsum = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    last = pd.Series(values).ffill().to_numpy()[origins]
    reference = np.where(np.isfinite(windows.reference), windows.reference,
                         np.where(np.isfinite(last), last, 0.0))
    scale = np.where(np.isfinite(windows.scale), windows.scale, series.floor)
    last = np.where(np.isfinite(last), last, reference)

    origin = origins[:, None]
    position = origin + ahead
    seasons_back = (ahead - 1) // m + 1
    at = position - seasons_back * m
    naive = np.where(at >= 0, values[np.clip(at, 0, n - 1)], np.nan)
    observed = np.isfinite(naive)
    naive = np.where(observed, naive, last[:, None])
    smooth = _smoothed(cumsum, counts, at, origin)
    smooth = np.where(np.isfinite(smooth), smooth, naive)
    smooth2 = _smoothed(cumsum, counts, at - m, origin)
    smooth2 = np.where(np.isfinite(smooth2), smooth2, smooth)
    now = _smoothed(cumsum, counts, origins, origins)
    before = _smoothed(cumsum, counts, origins - m, origins)
    shift = np.where(np.isfinite(now) & np.isfinite(before), now - before, 0.0)

    ref, sc = reference[:, None], scale[:, None]
    target_ns = series.start_ns + series.step_ns * position
    angle = 2 * np.pi * (target_ns % DAY_NS) / DAY_NS
    weekend = ((target_ns // DAY_NS + 3) % 7 >= 5).astype(float)  # 1970-01-01 was a Thursday
    base = (smooth - ref) / sc
    columns = [
        (naive - ref) / sc,
        base,
        (smooth2 - ref) / sc,
        np.broadcast_to((shift / scale)[:, None], ahead.shape),
        np.broadcast_to(((last - reference) / scale)[:, None], ahead.shape),
        np.sin(angle),
        np.cos(angle),
        weekend,
        ahead / config.train_horizon,
        np.full(ahead.shape, float(m > 1)),
        observed.astype(float),
        np.log1p(ahead) / math.log1p(config.train_horizon),
    ]
    features = np.clip(np.nan_to_num(np.stack(columns, axis=2), nan=0.0, posinf=0.0, neginf=0.0),
                       -INPUT_CLIP, INPUT_CLIP).astype(np.float32)
    known = position < (n if cutoff is None else min(cutoff, n))
    target = np.where(known, values[np.clip(position, 0, n - 1)], np.nan)
    return _Batch(windows.inputs, features, base, (target - ref) / sc, reference, scale, ahead)


@dataclasses.dataclass
class _Prepared:
    """One series' training windows, held-out windows, and its grid description."""

    series: _Series
    train: _Batch
    validation: _Batch


def _prepare(series: _Series, config: LstmForecasterConfig, name: str, stream: int) -> _Prepared:
    """Sample training windows before the held-out tail, and held-out windows in it."""
    n = len(series.values)
    cut = n - math.ceil(config.validation_fraction * n)
    first = config.context - 1
    candidates = np.arange(first, cut - 1)
    finite = np.isfinite(series.values)
    # An origin needs an observed value in its context and, to train, one in its targets.
    seen = np.concatenate([[0], np.cumsum(finite)])
    candidates = candidates[seen[candidates + 1] - seen[candidates + 1 - config.context] > 0]
    held_out = np.arange(max(cut - 1, first), n - 1)
    held_out = held_out[seen[held_out + 1] - seen[held_out + 1 - config.context] > 0]
    if candidates.size < MIN_TRAIN_WINDOWS or held_out.size < MIN_VALIDATION_WINDOWS:
        needed = math.ceil((config.context + MIN_TRAIN_WINDOWS + MIN_VALIDATION_WINDOWS)
                           / (1 - config.validation_fraction))
        raise ValueError(
            f"{name} has {n} steps, {candidates.size} usable forecast origins to train on and "
            f"{held_out.size} to hold out; LstmForecaster with context={config.context} and "
            f"validation_fraction={config.validation_fraction} needs about {needed} steps "
            f"({MIN_TRAIN_WINDOWS} origins to train on, {MIN_VALIDATION_WINDOWS} to hold out)"
        )
    rng = np.random.default_rng([config.seed, 3, stream])
    origins = np.sort(rng.choice(candidates, min(config.n_windows, candidates.size),
                                 replace=False))
    horizon = config.train_horizon
    n_targets = min(_TARGETS_PER_WINDOW, horizon)
    ahead = rng.random((origins.size, horizon)).argsort(axis=1)[:, :n_targets] + 1
    train = _windows(series, origins, ahead, config, cutoff=cut)
    keep = np.isfinite(train.target).any(axis=1)
    train = _Batch(*(getattr(train, f.name)[keep] for f in dataclasses.fields(_Batch)))
    if held_out.size > _VALIDATION_WINDOWS:
        held_out = held_out[np.linspace(0, held_out.size - 1, _VALIDATION_WINDOWS).astype(int)]
    all_ahead = np.broadcast_to(np.arange(1, horizon + 1), (held_out.size, horizon))
    validation = _windows(series, held_out, all_ahead, config)
    return _Prepared(series, train, validation)


# -- the network: run and train -----------------------------------------------------------
def _run(network: LstmForecastNetwork, batch: _Batch) -> np.ndarray:
    """Quantiles (b, t, 3), normalised units, for every window and target of ``batch``."""
    import torch

    out = np.empty((*batch.base.shape, 3), dtype="float64")
    network.eval()
    with torch_settings(), torch.inference_mode():
        for first in range(0, len(batch.base), _INFERENCE_BATCH):
            rows = slice(first, first + _INFERENCE_BATCH)
            out[rows] = network(torch.from_numpy(batch.inputs[rows]),
                                torch.from_numpy(batch.features[rows])).numpy()
    return batch.base[..., None] + out


def _pinball(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pinball loss summed over the quantiles, mean over the known targets (NaN: unknown)."""
    import torch

    known = torch.isfinite(target)
    error = torch.where(known, target, 0.0).unsqueeze(-1) - predicted
    error = error.clamp(-_ERROR_CLIP, _ERROR_CLIP)
    q = torch.tensor(QUANTILES, dtype=predicted.dtype)
    loss = torch.maximum(q * error, (q - 1) * error).sum(dim=-1)
    return (loss * known).sum() / known.sum().clamp(min=1)


def _held_out_loss(network: LstmForecastNetwork, batch: _Batch) -> float:
    import torch

    return float(_pinball(torch.from_numpy(_run(network, batch)), torch.from_numpy(batch.target)))


def _train(prepared: list[_Prepared], config: LstmForecasterConfig
           ) -> tuple[LstmForecastNetwork, int, float]:
    """One network on the pooled training windows; the epoch with the best held-out loss."""
    import torch

    train = _Batch.concat([p.train for p in prepared])
    validation = _Batch.concat([p.validation for p in prepared])
    inputs, features = torch.from_numpy(train.inputs), torch.from_numpy(train.features)
    base = torch.from_numpy(train.base.astype(np.float32))
    target = torch.from_numpy(train.target.astype(np.float32))
    rng = np.random.default_rng([config.seed, 4])
    with torch_settings(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = network_class()(hidden_size=config.hidden_size)
        optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
        best = (_held_out_loss(network, validation), 0, copy.deepcopy(network.state_dict()))
        for epoch in range(1, config.epochs + 1):
            network.train()
            order = torch.from_numpy(rng.permutation(len(target)))
            for rows in torch.split(order, config.batch_size):
                optimiser.zero_grad()
                offsets = network(inputs[rows], features[rows])
                loss = _pinball(base[rows].unsqueeze(-1) + offsets, target[rows])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                optimiser.step()
            held_out = _held_out_loss(network, validation)
            _log.debug("LSTM forecaster epoch %d: held-out pinball loss %.4f", epoch, held_out)
            if held_out < best[0]:
                best = (held_out, epoch, copy.deepcopy(network.state_dict()))
        network.load_state_dict(best[2])
    network.eval()
    return network, best[1], best[0]


def _interval_factors(quantiles: np.ndarray, batch: _Batch) -> np.ndarray:
    """Per distance-ahead bucket, the factor on the q10–q90 half-widths that covers 80 %."""
    target, q10, q50, q90 = batch.target, *np.moveaxis(quantiles, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(target >= q50, (target - q50) / (q90 - q50), (q50 - target) / (q50 - q10))
    ok = np.isfinite(ratio)
    bucket = np.searchsorted(_HORIZON_BUCKETS, batch.ahead)
    coverage = QUANTILES[-1] - QUANTILES[0]
    overall = float(np.quantile(ratio[ok], coverage)) if ok.sum() >= _MIN_BUCKET_TARGETS else 1.0
    factors, previous = [], overall
    for b in range(len(_HORIZON_BUCKETS)):
        chosen = ok & (bucket == b)
        if chosen.sum() >= _MIN_BUCKET_TARGETS:
            previous = float(np.quantile(ratio[chosen], coverage))
        factors.append(previous)  # a bucket with too few targets keeps the nearer one's
    return np.clip(np.asarray(factors), *_CALIBRATION_BOUNDS)


# -- the forecaster -----------------------------------------------------------------------
@register
class LstmForecaster(Forecaster):
    """Quantiles of every step ahead from an LSTM encoder and a decoder shared across horizons.

    See the module docstring for the inputs and the training. ``yhat`` is
    q50. Horizons longer than ``max_horizon`` (at most ``train_horizon``) are
    refused. ``fit(history)`` trains a network on ``history`` alone;
    :func:`fit_global` trains one network for many series.
    """

    name = "lstm"
    config_class = LstmForecasterConfig
    config: LstmForecasterConfig
    min_history_length: ClassVar[int] = 100
    requires_torch: ClassVar[bool] = True
    saved_apart: ClassVar[frozenset[str]] = frozenset({"network_"})

    @classmethod
    def _test_config(cls) -> LstmForecasterConfig:
        return LstmForecasterConfig(context=24, train_horizon=48, max_horizon=48, hidden_size=8,
                                    epochs=1, n_windows=300)

    def _fit(self, grid: pd.Series) -> None:
        prepared = self._prepare_series(grid, "history", stream=0)
        network, best_epoch, _ = _train([prepared], self.config)
        self._adopt(network, prepared, best_epoch, "own")

    def _prepare_series(self, grid: pd.Series, name: str, stream: int) -> _Prepared:
        """Season fallback, scale floor and windows of one series."""
        if self.season_ in ("workweek", "7D") and len(grid) < 2 * (_WEEK / self.step_):
            self.season_ = "1D"  # a weekly baseline needs two weeks
        values = grid.to_numpy(dtype="float64")
        floor = max(robust_scale(values), scale_floor(values),
                    1e-9 * max(1.0, float(np.nanmax(np.abs(values)))))
        series = _Series(values, int(grid.index[0].value), int(self.step_.value),
                         self.period_steps, float(floor))
        return _prepare(series, self.config, name, stream)

    def _adopt(self, network: LstmForecastNetwork, prepared: _Prepared, best_epoch: int,
               source: str) -> None:
        """Take (a copy of) ``network`` and calibrate it on this series' held-out windows."""
        own = network_class()(hidden_size=self.config.hidden_size)
        own.load_state_dict(network.state_dict())
        self.network_ = own.eval()
        self.scale_floor_ = prepared.series.floor
        self.n_train_windows_ = len(prepared.train.base)
        self.best_epoch_ = best_epoch
        self.network_source_ = source
        self.interval_factors_ = np.ones(len(_HORIZON_BUCKETS))
        if self.config.calibrate:
            quantiles = _run(self.network_, prepared.validation)
            self.interval_factors_ = _interval_factors(quantiles, prepared.validation)

    def context_length(self) -> int:
        # The encoder's context, and two seasons before every target, smoothed.
        return max(self.config.context, 2 * self.period_steps + _SMOOTH + 1)

    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame:
        values = context.to_numpy(dtype="float64")
        series = _Series(values, int(context.index[0].value), int(self.step_.value),
                         self.period_steps, self.scale_floor_)
        ahead = np.arange(1, len(index) + 1)[None, :]
        batch = _windows(series, np.array([len(values) - 1]), ahead, self.config)
        q10, q50, q90 = np.moveaxis(_run(self.network_, batch)[0], -1, 0)
        factor = self.interval_factors_[np.searchsorted(_HORIZON_BUCKETS, ahead[0])]
        normalised = np.stack([q50 - factor * (q50 - q10), q50, q50 + factor * (q90 - q50)], axis=1)
        quantiles = batch.reference[0] + batch.scale[0] * normalised
        frame = pd.DataFrame(quantiles, index=index, columns=list(QUANTILE_COLUMNS))
        frame["yhat"] = frame["q50"]
        return frame

    # -- state: the default get_state, and the network apart -------------------------------
    def _save_files(self, directory: Path) -> None:
        import torch

        torch.save(self.network_.state_dict(), directory / NETWORK_FILE)

    def _load_files(self, directory: Path) -> None:
        path = directory / NETWORK_FILE
        state = read_network_state(path, type(self).__name__)
        network = network_class()(hidden_size=self.config.hidden_size)
        try:
            network.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, KeyError) as error:
            raise ModelFormatError(f"{path} does not fit hidden_size="
                                   f"{self.config.hidden_size}: {error}") from error
        self.network_ = network.eval()


def fit_global(histories: Mapping[str, pd.Series], config: LstmForecasterConfig | None = None
               ) -> dict[str, LstmForecaster]:
    """Train ONE network on windows pooled from every history; one forecaster per series.

    Each series keeps its own grid step, season, scale floor, held-out
    calibration and end of history; the forecasters hold copies of the same
    weights. ``LstmForecaster(config).fit(h)`` is ``fit_global({"x": h})["x"]``.

    Raises
    ------
    TypeError, ValueError
        ``histories`` is not a non-empty mapping of names to series; a history
        is invalid or too short (the message names it).
    """
    config = config or LstmForecasterConfig()
    if not isinstance(config, LstmForecasterConfig):
        raise TypeError(f"config must be a LstmForecasterConfig, got {type(config).__name__}")
    if not isinstance(histories, Mapping):
        raise TypeError(f"histories must be a mapping of names to pandas Series, "
                        f"got {type(histories).__name__}")
    if not histories:
        raise ValueError("histories is empty; fit_global needs at least one series")
    models, grids, prepared = {}, {}, {}
    for stream, (key, history) in enumerate(histories.items()):
        name = f"histories[{key!r}]"
        model = LstmForecaster(config)
        grids[key] = model._prepare(history, name)
        prepared[key] = model._prepare_series(grids[key], name, stream)
        models[key] = model
    network, best_epoch, loss = _train(list(prepared.values()), config)
    _log.info("global LSTM forecaster trained on %d windows of %d series: best epoch %d, "
              "held-out pinball loss %.4f", sum(len(p.train.base) for p in prepared.values()),
              len(prepared), best_epoch, loss)
    for key, model in models.items():
        model._adopt(network, prepared[key], best_epoch, "global" if len(models) > 1 else "own")
        model._remember(grids[key])
    return models


__all__ = ["N_FEATURES", "LstmForecaster", "LstmForecasterConfig", "fit_global", "network_class"]
