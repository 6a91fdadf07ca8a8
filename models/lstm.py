"""LSTM detector: how far a value lies from what a small recurrent network expects from its past.

A PyTorch LSTM reads the last ``context_length`` values before a point and
predicts the point. Everything the network sees is relative to that context:
values are centred on the context's median and divided by its robust scale
(1.4826 × MAD, never below a per-series floor), and the prediction is made in
the same units. So one network serves CPU percent and bytes alike, and one
*global* network can be trained on windows pooled from many series
(:func:`fit_global`) and then shared by the detectors of all of them
(:meth:`LstmDetector.fit_with_network`), each keeping only its own scale floor,
residual scale and calibration.

Each step of the network's input is the normalised value, an observed flag
and the sine and cosine of the step's time of day (so that a daily cycle
longer than the context is learnable): a missing value, or a position before
the start of the window, has value and flag 0. So a
context with gaps or cut short by the window's start needs no imputation; the
network is trained on such contexts too (the start of the history, real gaps,
and a seeded share of training contexts truncated or punched with a gap).

``torch`` is imported only here, in :mod:`models.lstm_forecast` and in
:mod:`models.lstm_shared` (what the two LSTMs share), and only when a
network is built, trained, run, saved or loaded: it takes about a second to
import, which every ``import models`` (the CLI, a serving worker that has no
LSTM) would otherwise pay. :class:`LstmNetwork` is therefore created on first
use; ``from models.lstm import LstmNetwork`` works as for any class.

The module stays whole: the lazily defined network must keep the name
``models.lstm.LstmNetwork`` for pickle (Ray), and its windows, training and
detector share private types a split would only make public; what it shares
with the forecaster is in :mod:`models.lstm_shared`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

from models.base import (
    Detector,
    DetectorConfig,
    ModelFormatError,
    check_int,
    check_series,
    register,
)
from models.contract import check_float
from models.lstm_shared import (
    N_INPUTS,
    NETWORK_FILE,
    Windows,
    context_matrix,
    day_phase,
    normalise,
    read_network_state,
    scale_floor,
    torch_settings,
)
from models.seasonality import robust_scale

if TYPE_CHECKING:
    import torch
    from torch import nn

    # What type checkers see; at run time the class comes from network_class().
    class LstmNetwork(nn.Module):
        hidden_size: int
        num_layers: int
        spread: bool

        def __init__(
            self, *, hidden_size: int = 32, num_layers: int = 1, spread: bool = False
        ) -> None: ...

        @classmethod
        def from_config(cls, config: LstmDetectorConfig) -> LstmNetwork: ...

        def forward(self, inputs: torch.Tensor) -> torch.Tensor: ...

_log = logging.getLogger(__name__)

#: Fewest training and held-out windows a fit accepts.
MIN_TRAIN_WINDOWS = 20
MIN_VALIDATION_WINDOWS = 10
#: Share of training contexts cut short at a random point (as at a window's start), and share
#: punched with a random gap of up to ``context_length // 8`` points.
_TRUNCATE_SHARE = 0.2
_GAP_SHARE = 0.1
#: The network always runs on batches of exactly this many windows (the last one padded). The
#: float32 matrix products of the CPU kernels round a row differently depending on the batch's
#: shape; a fixed shape makes a point's score independent of how many points are scored with it,
#: bit for bit, which is what causality on prefixes needs.
INFERENCE_BATCH = 128
#: Output heads: a point prediction, or a prediction with its spread (Laplace likelihood).
HEADS = ("point", "laplace")
#: Training targets are clipped to this magnitude (normalised units).
_TARGET_CLIP = 1.0e6
#: Bounds of the predicted log-spread, in normalised units.
_LOG_SPREAD_BOUND = 8.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LstmDetectorConfig(DetectorConfig):
    """Hyperparameters of :class:`LstmDetector` (and of :func:`fit_global`).

    Parameters
    ----------
    context_length
        Points of past the network reads before each point.
    min_context
        Fewest observed points of that past a point needs to be scored; with
        fewer (the first ``min_context`` points of a window, or just after a
        long gap) it scores 0 and its expected range is NaN.
    hidden_size, num_layers
        Size of the LSTM. They fix the architecture: a saved or shared network
        must have been built with the same values.
    epochs
        Most passes over the training windows; training stops earlier when the
        loss on the held-out tail has not improved for ``patience`` epochs, and
        the weights of the best epoch are kept.
    patience
        Epochs without improvement of the held-out loss before training stops.
    batch_size, learning_rate
        Mini-batch size and Adam's step size.
    max_windows
        At most this many of the most recent training windows of each series
        are learned from, and at most this many held-out windows are kept
        (bounds the fit time of long histories).
    validation_fraction
        The most recent fraction of a history's windows is held out: it stops
        training early and the detector's calibration learns from the
        residuals there, which the network has not trained on. A short history
        leaves few residuals to calibrate on: a larger share calibrates better
        (fewer alarms on normal points) but trains on less (more anomalies
        missed); the default sits where the first still outweighs the second
        (figures: benchmarks/README.md, "Detection on NAB").
    head
        ``"laplace"`` (the default): the network predicts the next value and
        its spread ``b`` and is trained by the Laplace negative
        log-likelihood ``|y − μ| / b + log b`` (robust to outliers in the
        history, like the median); the residual is measured in units of ``b``,
        so a context where the network is unsure (a noisy or quantised
        stretch) needs a larger deviation to score high. ``"point"``: the
        next value only, Huber loss, spread 1. A residual in units of the
        context's spread is heavy-tailed without a spread (flat contexts make
        small spreads), which pushes the raw score that calibrates to 0.99 up
        and lets a clear spike score below it; in units of a predicted spread
        the residuals' tail is lighter, so normal points alarm less often and
        spikes stand out as much (figures: benchmarks/README.md, "Detection
        on NAB").
    seed
        Seeds the weights' initialisation, the shuffling and the augmentation:
        same seed and history, same network, bit for bit (on one machine).
    """

    context_length: int = 48
    min_context: int = 8
    hidden_size: int = 32
    num_layers: int = 1
    epochs: int = 20
    patience: int = 3
    batch_size: int = 64
    learning_rate: float = 3e-3
    max_windows: int = 2000
    validation_fraction: float = 0.25
    head: Literal["point", "laplace"] = "laplace"
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("context_length", self.context_length, 2, 1000)
        check_int("min_context", self.min_context, 1, self.context_length)
        check_int("hidden_size", self.hidden_size, 1, 1024)
        check_int("num_layers", self.num_layers, 1, 4)
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("patience", self.patience, 1, 10_000)
        check_int("batch_size", self.batch_size, 1, 100_000)
        check_float("learning_rate", self.learning_rate, 0.0, 1.0, open_low=True)
        check_int("max_windows", self.max_windows, MIN_TRAIN_WINDOWS, 10_000_000)
        check_float("validation_fraction", self.validation_fraction, 0.05, 0.5, open_low=False)
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r}; accepted: {', '.join(map(repr, HEADS))}")
        check_int("seed", self.seed, 0, 2**32 - 1)


@functools.cache
def network_class() -> type[LstmNetwork]:
    """The :class:`LstmNetwork` class; importing torch and defining it on the first call."""
    import torch
    from torch import nn

    class LstmNetwork(nn.Module):
        """One-step-ahead predictor on normalised contexts.

        Input ``(batch, context_length, 4)`` float32: per step the normalised value
        (0 where missing), a flag, 1.0 where the value was observed, and the sine
        and cosine of the step's time of day. Output
        ``(batch, 2)``: the predicted next value in the same normalised units and
        the log of its predicted spread (0 without a spread head).
        """

        def __init__(
            self, *, hidden_size: int = 32, num_layers: int = 1, spread: bool = False
        ) -> None:
            super().__init__()
            self.hidden_size = hidden_size
            self.num_layers = num_layers
            self.spread = spread
            self.lstm = nn.LSTM(
                input_size=N_INPUTS, hidden_size=hidden_size, num_layers=num_layers,
                batch_first=True
            )
            self.head = nn.Linear(hidden_size, 2 if spread else 1)

        @classmethod
        def from_config(cls, config: LstmDetectorConfig) -> LstmNetwork:
            return cls(
                hidden_size=config.hidden_size,
                num_layers=config.num_layers,
                spread=config.head != "point",
            )

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            output, _ = self.lstm(inputs)
            out = self.head(output[:, -1])
            if not self.spread:
                return torch.cat([out, torch.zeros_like(out)], dim=1)
            return torch.stack(
                [out[:, 0], out[:, 1].clamp(-_LOG_SPREAD_BOUND, _LOG_SPREAD_BOUND)], dim=1
            )

    # Named as the module attribute that __getattr__ serves, so that pickle (Ray) finds it.
    LstmNetwork.__module__, LstmNetwork.__qualname__ = __name__, "LstmNetwork"
    return LstmNetwork


def __getattr__(name: str) -> Any:
    # PEP 562: ``models.lstm.LstmNetwork`` (import, pickle, isinstance) without an eager torch.
    if name == "LstmNetwork":
        return network_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- windows ------------------------------------------------------------------------------
def _scorable(values: np.ndarray, config: LstmDetectorConfig) -> np.ndarray:
    """Positions whose context holds at least ``min_context`` observed points."""
    observed = np.isfinite(values).astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(observed)])
    start = np.maximum(np.arange(values.size) - config.context_length, 0)
    n_observed = cumulative[np.arange(values.size)] - cumulative[start]
    return np.flatnonzero(n_observed >= config.min_context)


@dataclasses.dataclass
class _Prediction:
    """Per window point: normalised value, predicted mean and spread, context median and scale."""

    target: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    reference: np.ndarray
    scale: np.ndarray


@dataclasses.dataclass
class _Split:
    """Training and held-out windows of one series."""

    train: Windows
    validation: Windows


def _split(
    values: np.ndarray, floor: float, config: LstmDetectorConfig, name: str, stream: int = 0,
    phase: np.ndarray | None = None,
) -> _Split:
    """Training windows (augmented) and the held-out tail of one history."""
    positions = _scorable(values, config)
    positions = positions[np.isfinite(values[positions])]
    n_validation = math.ceil(config.validation_fraction * positions.size)
    train_positions = positions[: positions.size - n_validation][-config.max_windows :]
    validation_positions = positions[positions.size - n_validation :][-config.max_windows :]
    too_few = train_positions.size < MIN_TRAIN_WINDOWS
    if too_few or validation_positions.size < MIN_VALIDATION_WINDOWS:
        raise ValueError(
            f"{name} has {positions.size} observed points with {config.min_context} observed "
            f"points of past; LstmDetector needs at least "
            f"{MIN_TRAIN_WINDOWS} to train on and {MIN_VALIDATION_WINDOWS} to hold out "
            f"(validation_fraction={config.validation_fraction}); a longer history or a "
            "smaller min_context"
        )
    rng = np.random.default_rng([config.seed, 2, stream])
    contexts = context_matrix(values, train_positions, config.context_length).copy()
    _augment(contexts, config, rng)
    train = normalise(contexts, values, train_positions, floor, phase)
    validation = normalise(
        context_matrix(values, validation_positions, config.context_length),
        values,
        validation_positions,
        floor,
        phase,
    )
    return _Split(train, validation)


def _augment(contexts: np.ndarray, config: LstmDetectorConfig, rng: np.random.Generator) -> None:
    """Cut some contexts short and punch a gap into others, in place, as scoring will meet them.

    A row keeps at least ``min_context`` observed points.
    """
    n, length = contexts.shape
    draw = rng.random(n)
    cut = np.flatnonzero(draw < _TRUNCATE_SHARE)
    keep = rng.integers(config.min_context, length + 1, size=cut.size)
    for row, n_keep in zip(cut.tolist(), keep.tolist(), strict=True):
        contexts[row, : length - n_keep] = np.nan
    punched = np.flatnonzero((draw >= _TRUNCATE_SHARE) & (draw < _TRUNCATE_SHARE + _GAP_SHARE))
    max_gap = max(1, length // 8)
    gaps = rng.integers(1, max_gap + 1, size=punched.size)
    starts = rng.integers(0, length, size=punched.size)
    for row, gap, start in zip(punched.tolist(), gaps.tolist(), starts.tolist(), strict=True):
        before = contexts[row].copy()
        contexts[row, start : start + gap] = np.nan
        if np.isfinite(contexts[row]).sum() < config.min_context:
            contexts[row] = before


# -- the network --------------------------------------------------------------------------
def predict(network: LstmNetwork, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted mean and spread (float64) for ``inputs`` of shape ``(m, context_length, N_INPUTS)``.

    The spread is 1 everywhere for a network without a spread head.

    Runs under ``torch.inference_mode`` on fixed-size batches of
    ``INFERENCE_BATCH`` windows, so that a window's prediction does not depend
    on the other windows scored with it.
    """
    import torch

    n = inputs.shape[0]
    out = np.empty((n, 2), dtype="float64")
    if n == 0:
        return out[:, 0], out[:, 1]
    network.eval()
    batch = np.zeros((INFERENCE_BATCH, *inputs.shape[1:]), dtype=np.float32)
    with torch_settings(), torch.inference_mode():
        for first in range(0, n, INFERENCE_BATCH):
            chunk = inputs[first : first + INFERENCE_BATCH]
            size = chunk.shape[0]
            batch[:size], batch[size:] = chunk, 0.0
            out[first : first + size] = network(torch.from_numpy(batch)).numpy()[:size]
    return out[:, 0], np.exp(out[:, 1])


def _loss(head: str, target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Mean training loss: Huber for a point head, Laplace negative log-likelihood otherwise."""
    import torch

    mean, log_spread = output[:, 0], output[:, 1]
    if head == "point":
        return torch.nn.functional.huber_loss(mean, target, delta=1.0)
    return ((target - mean).abs() * torch.exp(-log_spread) + log_spread).mean()


def _validation_loss(head: str, network: LstmNetwork, windows: Windows) -> float:
    import torch

    mean, spread = predict(network, windows.inputs)
    output = np.stack([mean, np.log(spread)], axis=1)
    with torch.no_grad():
        return float(_loss(head, torch.from_numpy(windows.target), torch.from_numpy(output)))


@dataclasses.dataclass
class _TrainingReport:
    n_train_windows: int
    n_epochs: int
    best_epoch: int
    validation_loss: float


def _train(
    splits: Sequence[_Split], config: LstmDetectorConfig
) -> tuple[LstmNetwork, _TrainingReport]:
    """Train one network on the pooled training windows; early stopping on the pooled tails."""
    import torch

    inputs = np.concatenate([s.train.inputs for s in splits])
    # Both losses grow linearly in the error; the clip only keeps a value that overflowed the
    # normalisation (huge against a tiny floor) from turning the loss into NaN.
    target = np.clip(
        np.concatenate([s.train.target for s in splits]), -_TARGET_CLIP, _TARGET_CLIP
    ).astype(np.float32)
    validation = Windows(
        positions=np.concatenate([s.validation.positions for s in splits]),
        inputs=np.concatenate([s.validation.inputs for s in splits]),
        target=np.concatenate([s.validation.target for s in splits]),
        reference=np.concatenate([s.validation.reference for s in splits]),
        scale=np.concatenate([s.validation.scale for s in splits]),
    )
    rng = np.random.default_rng([config.seed, 1])
    with torch_settings(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = network_class().from_config(config)
        optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
        x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(target)
        best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(network.state_dict())
        epoch = 0
        for epoch in range(1, config.epochs + 1):
            network.train()
            order = torch.from_numpy(rng.permutation(len(target)))
            for first in range(0, len(target), config.batch_size):
                batch = order[first : first + config.batch_size]
                optimiser.zero_grad()
                loss = _loss(config.head, y_all[batch], network(x_all[batch]))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                optimiser.step()
            validation_loss = _validation_loss(config.head, network, validation)
            _log.debug("LSTM epoch %d: held-out loss %.4f", epoch, validation_loss)
            if validation_loss < best_loss:
                best_loss, best_epoch = validation_loss, epoch
                best_state = copy.deepcopy(network.state_dict())
            elif epoch - best_epoch >= config.patience:
                break
        network.load_state_dict(best_state)
    network.eval()
    report = _TrainingReport(len(target), epoch, best_epoch, best_loss)
    return network, report


def fit_global(
    histories: Sequence[pd.Series], config: LstmDetectorConfig | None = None
) -> LstmNetwork:
    """Train ONE network on windows pooled from many series.

    Every history is normalised by its own contexts and scale floor, so series
    of any unit mix. Each contributes its most recent ``max_windows`` training
    windows; the most recent ``validation_fraction`` of each is held out, and
    the pooled held-out loss stops training early.

    Share the result with :meth:`LstmDetector.fit_with_network` on each series
    (with the same config): the detector then calibrates on the tail of its
    history that ``fit_global`` held out, so its calibration stays honest. To
    ship the network to workers, send ``network.state_dict()`` (a dict of
    tensors); ``fit_with_network`` takes that too.

    Raises
    ------
    TypeError, ValueError
        No histories, or a history that is not a valid series or is too short
        (the message names its position).
    """
    config = config or LstmDetectorConfig()
    if not isinstance(config, LstmDetectorConfig):
        raise TypeError(f"config must be a LstmDetectorConfig, got {type(config).__name__}")
    if isinstance(histories, pd.Series | str | bytes) or not isinstance(histories, Sequence):
        raise TypeError(
            f"histories must be a sequence of pandas Series, got {type(histories).__name__}"
        )
    if not histories:
        raise ValueError("histories is empty; fit_global needs at least one series")
    splits = []
    for i, history in enumerate(histories):
        name = f"histories[{i}]"
        checked = check_series(history, name=name, min_length=LstmDetector.min_history_length)
        values = checked.to_numpy()
        splits.append(_split(values, scale_floor(values), config, name, stream=i,
                             phase=day_phase(checked.index)))
    network, report = _train(splits, config)
    _log.info(
        "global LSTM trained on %d windows of %d series: %d epochs, best %d, held-out loss %.4f",
        report.n_train_windows, len(splits), report.n_epochs, report.best_epoch,
        report.validation_loss,
    )
    return network


def _network_copy(
    network: LstmNetwork | Mapping[str, torch.Tensor], config: LstmDetectorConfig
) -> LstmNetwork:
    """A private copy of ``network`` (or of a state dict) with the architecture of ``config``."""
    if isinstance(network, network_class()):
        state = network.state_dict()
    elif isinstance(network, Mapping):
        state = network
    else:
        raise TypeError(
            f"network must be an LstmNetwork or its state dict, got {type(network).__name__}"
        )
    own = network_class().from_config(config)
    try:
        own.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, KeyError) as error:
        raise ValueError(
            f"network does not fit hidden_size={config.hidden_size}, "
            f"num_layers={config.num_layers}, head={config.head!r}: {error}"
        ) from error
    return own.eval()


@register
class LstmDetector(Detector):
    """Residual of an LSTM's one-step-ahead prediction, in units of the context's spread.

    For each point the network reads the ``context_length`` values before it,
    centred on their median ``m`` and divided by their robust scale ``s``
    (1.4826 × MAD, never below the series' floor, see :func:`scale_floor`),
    and predicts ``(y − m) / s`` as ``μ`` with a spread ``b`` (``b = 1`` with
    ``head="point"``). The raw score is
    ``|(y − m) / s − μ| / (b · residual_scale)``, with ``residual_scale`` the
    robust spread of ``((y − m) / s − μ) / b`` on the held-out tail of the
    history. Both directions are anomalous. Calibration learns from the same
    held-out residuals, so 0.99 means a surprise seen at most once in a
    hundred points the network had not trained on. The expected range is
    ``m + s · (μ ± raw_threshold · b · residual_scale)``.

    Training
        ``fit(history)`` trains the network on the history itself: the most
        recent ``max_windows`` windows before the held-out tail, Laplace
        likelihood (Huber loss for a point head), Adam, gradient clipping,
        early stopping on the tail. Seeded and single-threaded: same seed and
        history, same network.
        ``fit_with_network(history, network)`` instead takes a trained
        network — typically one global network from :func:`fit_global`,
        shared by many series — and only learns the per-series floor, residual
        scale and calibration. Either way the network is the detector's own
        copy, saved with it.

    Start of a window, gaps
        A point's context is the ``context_length`` positions before it in
        the *window*; positions before the window's start and missing values
        are fed as "not observed" (the network was trained on such contexts),
        never imputed. A point with fewer than ``min_context`` observed points
        in its context — the first ``min_context`` points of a window, or just
        after a long gap — scores 0 (nothing to compare with, so not
        anomalous) and its expected range is NaN. A missing point scores NaN.
        So a point's score depends on it and the ``context_length`` points
        before it only. Positions count points, not time: the series is
        expected on a regular grid, NaN marking a gap.
    """

    name: ClassVar[str] = "lstm"
    config_class = LstmDetectorConfig
    config: LstmDetectorConfig
    min_history_length: ClassVar[int] = 60
    requires_torch: ClassVar[bool] = True
    saved_apart: ClassVar[frozenset[str]] = frozenset({"network_"})

    @classmethod
    def _test_config(cls) -> LstmDetectorConfig:
        return LstmDetectorConfig(hidden_size=8, epochs=1, max_windows=500)

    def context_points(self) -> int:
        return self.config.context_length

    def min_history_points(self, step: pd.Timedelta | None = None) -> int:
        """``min_context`` points of past, then enough windows to train on and to hold out."""
        n_windows = MIN_TRAIN_WINDOWS + MIN_VALIDATION_WINDOWS
        while (math.ceil(self.config.validation_fraction * n_windows) < MIN_VALIDATION_WINDOWS
               or n_windows - math.ceil(self.config.validation_fraction * n_windows)
               < MIN_TRAIN_WINDOWS):
            n_windows += 1
        return max(self.min_history_length, self.config.min_context + n_windows)

    def fit_with_network(
        self, history: pd.Series, network: LstmNetwork | Mapping[str, torch.Tensor]
    ) -> Self:
        """Fit to ``history`` around a trained network (an :class:`LstmNetwork` or its state dict).

        The weights are copied, never trained; the detector learns the scale
        floor, the residual scale and the calibration of ``history`` from the
        held-out tail (the most recent ``validation_fraction`` of its windows).
        The network must have this config's ``hidden_size`` and ``num_layers``
        and should have been trained with its ``context_length``.

        Raises
        ------
        TypeError
            ``network`` is neither; or a bad ``history`` as in ``fit``.
        ValueError
            ``network``'s architecture differs from the config; or as in ``fit``.
        """
        self._given_network: LstmNetwork | None = _network_copy(network, self.config)
        try:
            return self.fit(history)
        finally:
            self._given_network = None

    # -- fit ------------------------------------------------------------------------------
    def _fit(self, history: pd.Series) -> None:
        values = history.to_numpy(dtype="float64")
        floor = scale_floor(values)
        split = _split(values, floor, self.config, "history", phase=day_phase(history.index))
        given = getattr(self, "_given_network", None)
        if given is None:
            network, report = _train([split], self.config)
            self.network_source_ = "own"
            self.n_train_windows_ = report.n_train_windows
            self.n_epochs_ = report.n_epochs
            self.best_epoch_ = report.best_epoch
        else:
            network = given
            self.network_source_ = "given"
            self.n_train_windows_ = 0
            self.n_epochs_ = 0
            self.best_epoch_ = 0
        mean, spread = predict(network, split.validation.inputs)
        residual = (split.validation.target - mean) / spread
        self.network_ = network
        self.scale_floor_ = float(floor)
        self.residual_scale_ = float(robust_scale(residual))
        self.n_validation_windows_ = int(residual.size)
        self._validation_raw: np.ndarray | None = np.abs(residual) / self.residual_scale_

    def _training_raw_scores(self, history: pd.Series) -> np.ndarray:
        # Held-out tail, not in-sample: the network fits its training windows too closely.
        raw, self._validation_raw = self._validation_raw, None
        return raw if raw is not None else np.empty(0)

    # -- score ----------------------------------------------------------------------------
    def _predict(self, window: pd.Series) -> _Prediction:
        """What the network expects at every point of ``window`` (NaN: too little context)."""
        values = window.to_numpy(dtype="float64")
        n = values.size
        target, mean, spread = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        reference, scale = np.full(n, np.nan), np.full(n, np.nan)
        positions = _scorable(values, self.config)
        if positions.size:
            windows = normalise(
                context_matrix(values, positions, self.config.context_length),
                values,
                positions,
                self.scale_floor_,
                day_phase(window.index),
            )
            target[positions] = windows.target
            mean[positions], spread[positions] = predict(self.network_, windows.inputs)
            reference[positions], scale[positions] = windows.reference, windows.scale
        return _Prediction(target, mean, spread, reference, scale)

    def _score_z(self, window: pd.Series) -> np.ndarray:
        p = self._predict(window)
        with np.errstate(over="ignore", invalid="ignore"):
            raw = np.abs(p.target - p.mean) / (p.spread * self.residual_scale_)
        values = window.to_numpy(dtype="float64")
        # A finite value whose arithmetic overflowed is as far from normal as it gets.
        raw[np.isfinite(values) & np.isfinite(p.mean) & ~np.isfinite(raw)] = np.inf
        # Too little past: nothing to compare with, so not anomalous.
        return np.where(np.isnan(p.mean), 0.0, raw)

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        p = self._predict(window)
        half = raw_threshold * self.residual_scale_ * p.spread
        return p.reference + p.scale * (p.mean - half), p.reference + p.scale * (p.mean + half)

    # -- state: the default get_state, and the network apart -------------------------------
    def _save_files(self, directory: Path) -> None:
        import torch

        torch.save(self.network_.state_dict(), directory / NETWORK_FILE)

    def _load_files(self, directory: Path) -> None:
        path = directory / NETWORK_FILE
        state = read_network_state(path, type(self).__name__)
        try:
            self.network_ = _network_copy(state, self.config)
        except ValueError as error:
            raise ModelFormatError(f"{path}: {error}") from error


__all__ = [
    "INFERENCE_BATCH",
    "NETWORK_FILE",
    "LstmDetector",
    "LstmDetectorConfig",
    "LstmNetwork",
    "fit_global",
    "network_class",
    "predict",
    "scale_floor",
]
