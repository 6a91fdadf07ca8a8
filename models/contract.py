"""What every model shares: config, learned state, capabilities, errors and plain-format persistence.

Detectors (:class:`models.base.Detector`), forecasters
(:class:`models.forecast.Forecaster`) and the correlation model
(:class:`models.correlation.CorrelationDetector`) all derive from
:class:`Model`, so that one rule says when a model is fitted, one writer and
one reader persist it, and its capabilities are flags a caller reads instead
of checking names.

A saved model is a directory: ``config.json`` (class, registry name, package
and format version, config), ``state.json`` (learned scalars and lists),
``arrays.npz`` (learned arrays, read without pickle) and whatever a class
saves apart (a forest with skops, a torch state dict, a calibration).
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from models import catalog

#: Version of the saved layout; a model saved in another version is refused on load.
FORMAT_VERSION = 2


class NotFittedError(RuntimeError):
    """A model was asked to score, forecast or save before ``fit``."""


class ModelFormatError(ValueError):
    """A saved model is missing, of another class, or of an unknown format version."""


# -- config -------------------------------------------------------------------------------
def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Refuse a config field that is not an int in ``[low, high]``, naming field and range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}={value} must lie in [{low}, {high}]")


def check_float(name: str, value: Any, low: float, high: float, *, open_low: bool) -> None:
    """Refuse a config field that is not a finite float in the range, naming field and range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    below = value <= low if open_low else value < low
    if below or value > high or not math.isfinite(value):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name}={value} must lie in {bracket}{low}, {high}]")


def check_fields(cls: type, values: Mapping[str, Any]) -> None:
    """Refuse keys that are not fields of the dataclass ``cls``, naming them and the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base of every model config: hyperparameters only, all defaulted, JSON-friendly."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        check_fields(cls, values)
        return cls(**values)


# -- files --------------------------------------------------------------------------------
def package_version() -> str:
    try:
        return metadata.version("novaevo-aiops")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def header(name: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a saved model: what it is and which format it is in."""
    return {
        "class": class_name,
        "name": name,
        "package_version": package_version(),
        "format_version": FORMAT_VERSION,
        "config": config,
    }


def read_json(path: Path, what: str) -> Any:
    """Parse a saved JSON file, or raise ModelFormatError naming ``what`` and ``path``."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelFormatError(f"cannot read {what} at {path}: {error}") from error


def check_format(saved: dict[str, Any], path: Path) -> None:
    """Refuse a saved model of another format version."""
    if saved.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format_version {saved.get('format_version')!r}; "
            f"this version reads {FORMAT_VERSION}"
        )


def write_model_files(path: Path, name: str, class_name: str, config: dict[str, Any],
                      params: dict[str, Any], arrays: dict[str, np.ndarray] | None) -> None:
    """``config.json`` (with the header), ``state.json`` and ``arrays.npz`` (unless None)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(header(name, class_name, config), indent=2))
    (path / "state.json").write_text(json.dumps(params, indent=2))
    if arrays is not None:
        np.savez(path / "arrays.npz", **arrays)


def read_arrays(path: Path, what: str) -> dict[str, np.ndarray]:
    """The arrays of ``path/arrays.npz``, read without pickle."""
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}
    except (OSError, ValueError) as error:
        raise ModelFormatError(f"cannot read {what} in {path}: {error}") from error


def _json_value(owner: str, attribute: str, value: Any) -> Any:
    """``value`` as ``state.json`` holds it: numbers, strings, None and lists or dicts of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, list | tuple):
        return [_json_value(owner, attribute, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(owner, attribute, v) for k, v in value.items()}
    raise TypeError(
        f"{owner}.{attribute} is a {type(value).__name__}; state.json holds numbers, strings "
        "and lists of them, arrays.npz holds arrays: list it in saved_apart and write it in "
        "_save_files, or override get_state"
    )


# -- the model ----------------------------------------------------------------------------
class Model(ABC):
    """Base of every model: a config, learned state in attributes ending in ``_``, persistence.

    A concrete class sets ``name`` (its catalog key), ``config_class`` and,
    through its kind's base, ``kind``; ``__init__`` stores the config and
    nothing else.

    Capabilities (class attributes, read by the bundle, training and the tests
    instead of checks by name):

    ``requires_torch``
        Fitting, scoring or loading it imports torch (a logged bundle that
        holds one must pin torch).
    ``supports_multivariate``
        It models several metrics at once (a DataFrame in, not a Series).
    ``requires_fit``
        It learns from history; False for a model that is usable unfitted.
    ``provides_expected_range``
        Its expected range is a band around a baseline at every point of a
        window, the one to report beside the ensemble's score (a detector's
        other ranges are by-products, NaN until their context is filled).

    Learned state: ``fit`` sets public attributes ending in ``_`` and nothing
    else does; a model is fitted when it has one (or needs no fit). By
    default :meth:`get_state` saves every such attribute, arrays to
    ``arrays.npz`` and the rest to ``state.json``, except the ones a kind's
    base saves itself and those named in ``saved_apart``, which
    ``_save_files``/``_load_files`` write and read (estimators, networks).
    """

    name: ClassVar[str]
    kind: ClassVar[catalog.Kind]
    config_class: ClassVar[type[ModelConfig]]

    requires_torch: ClassVar[bool] = False
    supports_multivariate: ClassVar[bool] = False
    requires_fit: ClassVar[bool] = True
    provides_expected_range: ClassVar[bool] = False

    #: Learned attributes written by ``_save_files`` rather than by :meth:`get_state`.
    saved_apart: ClassVar[frozenset[str]] = frozenset()
    #: Learned attributes the kind's base saves itself (see ``_state_for_save``).
    _kind_state: ClassVar[frozenset[str]] = frozenset()
    #: Whether a saved model has an ``arrays.npz``.
    stores_arrays: ClassVar[bool] = True

    def __init__(self, config: ModelConfig | None = None) -> None:
        if config is None:
            config = self.config_class()
        # Exactly its own class: another model's config derived from it has fields this
        # model would save but not read back.
        if type(config) is not self.config_class:
            raise TypeError(
                f"config must be a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @classmethod
    def _test_config(cls) -> ModelConfig:
        """A config that fits in well under a second on a few days of 5-minute data.

        The contract tests use it (as river's estimators carry their unit test
        parameters); a class whose defaults are slow overrides it.
        """
        return cls.config_class()

    def parts(self) -> list[Model]:
        """The models this one is made of (an ensemble's members), whose capabilities it has too."""
        return []

    # -- learned state --------------------------------------------------------------------
    def _learned_attributes(self) -> list[str]:
        return [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]

    @property
    def is_fitted(self) -> bool:
        return not self.requires_fit or bool(self._learned_attributes())

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(history) first")

    @contextmanager
    def _fitting(self) -> Iterator[None]:
        """Around a fit: one that raises leaves a model that was not fitted unfitted."""
        was_fitted = self.is_fitted
        try:
            yield
        except BaseException:
            if not was_fitted:
                for attribute in self._learned_attributes():
                    delattr(self, attribute)
            raise

    @classmethod
    def _state_key(cls, attribute: str) -> str:
        """The key of a learned attribute in ``state.json``/``arrays.npz``."""
        return attribute

    @classmethod
    def _attribute(cls, key: str) -> str:
        """The learned attribute a saved key restores (the inverse of ``_state_key``)."""
        return key

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned state as (JSON-friendly scalars and lists, named arrays).

        Raises
        ------
        TypeError
            A learned attribute is neither an array nor JSON-friendly and not in
            ``saved_apart``.
        """
        params: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        skipped = self.saved_apart | self._kind_state
        for attribute in self._learned_attributes():
            if attribute in skipped:
                continue
            value = getattr(self, attribute)
            key = self._state_key(attribute)
            if isinstance(value, np.ndarray):
                arrays[key] = value
            else:
                params[key] = _json_value(type(self).__name__, attribute, value)
        return params, arrays

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned."""
        for key, value in (*params.items(), *arrays.items()):
            setattr(self, self._attribute(key), value)

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config, state and arrays under ``directory`` (created if needed).

        Raises
        ------
        NotFittedError
            The model is not fitted (nothing is written).
        """
        self._check_fitted()
        path = Path(directory)
        params, arrays = self._state_for_save()
        write_model_files(path, self.name, type(self).__name__, self.config.to_dict(), params,
                          arrays if self.stores_arrays else None)
        self._save_kind_files(path)
        self._save_files(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read a model written by :meth:`save`; checks format version and class.

        Called on a kind's base (``Detector.load``) it returns the class the
        saved model names; on a class, it refuses a saved model of another one.

        Raises
        ------
        ModelFormatError
            A file is missing or unreadable, of another format version, or holds
            a model of another class or one this version does not know.
        """
        path = Path(directory)
        saved = read_json(path / "config.json", cls._saved_description())
        check_format(saved, path)
        target = cls._saved_class(saved, path)
        what = target._saved_description()
        params = read_json(path / "state.json", what)
        arrays = read_arrays(path, what) if target.stores_arrays else {}
        try:
            model = target(target.config_class.from_dict(saved["config"]))
            model._restore_from_load(params, arrays)
            model._load_kind_files(path)
            model._load_files(path)
        except ModelFormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelFormatError(f"cannot read {what} in {path}: {error}") from error
        return model

    @classmethod
    def _saved_description(cls) -> str:
        """How error messages about a saved model of this class name it."""
        return f"a saved {catalog.kind_label(cls.kind)}"

    @classmethod
    def _saved_class(cls, saved: dict[str, Any], path: Path) -> type[Self]:
        """The class a saved header names, refused unless it is ``cls`` or derives from it.

        Names are unique within a kind only (``arima`` is a detector and a forecaster), so
        the header's class must be the one its name resolves to in ``cls``'s kind.
        """
        name = saved.get("name", "?")
        try:
            target = (cls if getattr(cls, "name", None) == name
                      else catalog.model_class(name, cls.kind))
        except ValueError as error:
            raise ModelFormatError(
                f"{path} holds a {catalog.kind_label(cls.kind)} this version does not know: {error}"
            ) from error
        if not issubclass(target, cls) or saved.get("class") != target.__name__:
            raise ModelFormatError(f"{path} holds a {saved.get('class')} ({name!r}), not a "
                                   f"{cls.__name__}")
        return target

    def _state_for_save(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What ``state.json`` and ``arrays.npz`` hold; a kind's base adds its own state."""
        return self.get_state()

    def _restore_from_load(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The inverse of ``_state_for_save``."""
        self.set_state(params, arrays)

    def _save_kind_files(self, directory: Path) -> None:
        """Files every model of a kind has beside its state (a detector's calibration)."""
        return None

    def _load_kind_files(self, directory: Path) -> None:
        return None

    def _save_files(self, directory: Path) -> None:
        """Write the ``saved_apart`` state of a class (estimators, state dicts); default: nothing."""
        return None

    def _load_files(self, directory: Path) -> None:
        """Read what ``_save_files`` wrote; default: nothing."""
        return None
