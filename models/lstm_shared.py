"""What the LSTM detector and the LSTM forecaster share: normalised context windows and torch.

Both networks read the same inputs: per step of a context, the value
centred on the context's median and divided by its robust scale (never below
a per-series floor), an observed flag, and the sine and cosine of the step's
time of day. Both run torch single-threaded with deterministic kernels and
save their weights as a state dict read back with ``weights_only=True``.

``torch`` is imported here only inside the functions that need it, so that
``import models`` stays light (see :mod:`models.lstm`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.contract import ModelFormatError
from models.seasonality import robust_scale

if TYPE_CHECKING:
    import torch

#: File holding a network's weights: a torch state dict, read back with ``weights_only=True``.
NETWORK_FILE = "network.pt"
#: Normalised context values are clipped to this magnitude before the network sees them, so a
#: past spike cannot saturate the recurrent state (the target is never clipped when scoring).
INPUT_CLIP = 10.0
#: The scale floor of a series is this fraction of the robust spread of its first differences.
FLOOR_FRACTION = 0.5
_MAD_TO_SIGMA = 1.4826


@contextlib.contextmanager
def torch_settings() -> Iterator[None]:
    """One thread and deterministic kernels for the duration; the caller's settings after.

    One thread: the matrices are tiny, so more threads only add overhead, and
    the machine is shared. These are process-wide settings of torch: two
    threads of one process fitting at once would see each other's.
    """
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


#: Inputs per step: normalised value, observed flag, sine and cosine of the time of day.
N_INPUTS = 4
DAY_NS = 86_400 * 10**9


def context_matrix(values: np.ndarray, positions: np.ndarray, length: int) -> np.ndarray:
    """Row ``i`` holds ``values[p - length : p]`` for ``p = positions[i]``; NaN before the start."""
    padded = np.concatenate([np.full(length, np.nan), values])
    view = np.lib.stride_tricks.sliding_window_view(padded, length)
    return view[positions]


def _row_median(matrix: np.ndarray, n_observed: np.ndarray) -> np.ndarray:
    """Median of the finite values of each row (each row holds at least one)."""
    ordered = np.sort(matrix, axis=1)  # NaN sorts last
    rows = np.arange(matrix.shape[0])
    return 0.5 * (ordered[rows, (n_observed - 1) // 2] + ordered[rows, n_observed // 2])


@dataclasses.dataclass
class Windows:
    """Normalised contexts and targets of some points of a series."""

    positions: np.ndarray  # (m,) positions in the series
    inputs: np.ndarray  # (m, context_length, N_INPUTS) float32
    target: np.ndarray  # (m,) (value - reference) / scale; NaN where the value is missing
    reference: np.ndarray  # (m,) median of the context, in the series' units
    scale: np.ndarray  # (m,) robust scale of the context, never below the floor


def day_phase(index: pd.DatetimeIndex) -> np.ndarray:
    """Each timestamp's time of day as a fraction in [0, 1)."""
    return (index.as_unit("ns").asi8 % DAY_NS) / DAY_NS


def normalise(
    contexts: np.ndarray, values: np.ndarray, positions: np.ndarray, floor: float,
    phase: np.ndarray | None = None,
) -> Windows:
    """The network inputs and targets of ``positions``, each relative to its own context."""
    observed = np.isfinite(contexts)
    n_observed = observed.sum(axis=1)
    reference = _row_median(contexts, n_observed)
    spread = _MAD_TO_SIGMA * _row_median(np.abs(contexts - reference[:, None]), n_observed)
    scale = np.maximum(spread, floor)
    with np.errstate(over="ignore", invalid="ignore"):
        z = (contexts - reference[:, None]) / scale[:, None]
        target = (values[positions] - reference) / scale
    inputs = np.zeros((*contexts.shape, N_INPUTS), dtype=np.float32)
    inputs[..., 0] = np.where(observed, np.clip(z, -INPUT_CLIP, INPUT_CLIP), 0.0)
    inputs[..., 1] = observed
    if phase is not None:
        # Where in the day each step lies, so that the network can learn a daily cycle longer
        # than its context (0 before the start of the series).
        angle = 2 * np.pi * context_matrix(phase, positions, contexts.shape[1])
        inputs[..., 2] = np.nan_to_num(np.sin(angle), nan=0.0)
        inputs[..., 3] = np.nan_to_num(np.cos(angle), nan=0.0)
    return Windows(positions, inputs, target, reference, scale)


def scale_floor(values: np.ndarray) -> float:
    """Smallest context scale of a series: half the robust spread of its observed steps.

    A flat context (MAD 0) would otherwise turn the smallest change into an
    infinite deviation; the floor ties "small" to how much the series usually
    moves from one point to the next.
    """
    finite = values[np.isfinite(values)]
    steps = np.diff(finite) if finite.size > 1 else np.zeros(1)
    return FLOOR_FRACTION * robust_scale(steps)


def read_network_state(path: Path, owner: str) -> Mapping[str, torch.Tensor]:
    """The state dict saved at ``path``, read with ``weights_only=True`` (no arbitrary objects).

    Raises
    ------
    ModelFormatError
        The file is missing, unreadable or holds something else than a state dict.
    """
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing; a saved {owner} needs it")
    import torch

    try:
        # weights_only: tensors and plain containers only; any other object refuses to load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise ModelFormatError(f"cannot read the network in {path}: {error}") from error
    if not isinstance(state, Mapping):
        raise ModelFormatError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
