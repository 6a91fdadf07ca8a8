"""The one catalog of model classes: stable names to classes, for every kind of model.

A class enrols with the :func:`register` decorator under its ``name`` and its
``kind``. Names are unique within a kind, not across kinds: ``"arima"`` is a
detector and a forecaster. Configs, saved models and the CLI use the names; a
saved model is read back into the class its ``config.json`` names (see
:meth:`models.contract.Model.load`).

Kinds: ``"detector"`` (per series, :class:`models.base.Detector`),
``"forecaster"`` (:class:`models.forecast.Forecaster`) and
``"service_detector"`` (several metrics of one service at once,
:class:`models.correlation.CorrelationDetector`).

Importing ``models`` enrols every built-in class.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

if TYPE_CHECKING:
    from models.contract import Model

Kind = Literal["detector", "forecaster", "service_detector"]
KINDS: tuple[Kind, ...] = get_args(Kind)

_CLASSES: dict[str, dict[str, type[Model]]] = {kind: {} for kind in KINDS}

M = TypeVar("M", bound="type[Model]")


def register(cls: M) -> M:
    """Class decorator: enrol a model class under its ``kind`` and stable ``name``.

    Raises
    ------
    ValueError
        Another class is already registered under this kind and name, or the kind is unknown.
    """
    kind = cls.kind
    if kind not in _CLASSES:
        raise ValueError(f"{cls.__name__}.kind={kind!r}; accepted: {', '.join(KINDS)}")
    known = _CLASSES[kind]
    if cls.name in known and known[cls.name] is not cls:
        raise ValueError(f"{kind_label(kind)} name {cls.name!r} is already registered "
                         f"(by {known[cls.name].__name__})")
    known[cls.name] = cls
    return cls


def model_class(name: str, kind: Kind) -> type[Model]:
    """The class registered as ``name`` among models of ``kind``.

    Raises
    ------
    ValueError
        No such name (the message lists the known ones) or no such kind.
    """
    try:
        return classes(kind)[name]
    except KeyError:
        raise ValueError(f"unknown {kind_label(kind)} {name!r}; known: {names(kind)}") from None


def names(kind: Kind) -> list[str]:
    """The registered names of ``kind``, sorted."""
    return sorted(classes(kind))


def classes(kind: Kind) -> Mapping[str, type[Model]]:
    """A read-only, live view of the classes of ``kind`` by name."""
    try:
        return MappingProxyType(_CLASSES[kind])
    except KeyError:
        raise ValueError(f"kind={kind!r}; accepted: {', '.join(KINDS)}") from None


def all_classes() -> list[type[Model]]:
    """Every registered class, of every kind."""
    return [cls for kind in KINDS for cls in _CLASSES[kind].values()]


def make(name: str, kind: Kind, **config: Any) -> Model:
    """A fresh, unfitted model of ``kind`` and ``name``, ``config`` overriding its defaults."""
    cls = model_class(name, kind)
    return cls(cls.config_class.from_dict(config))


def kind_label(kind: str) -> str:
    """How messages name a kind: ``service detector``."""
    return kind.replace("_", " ")
