"""One contract suite for every catalogued model, of every kind.

What holds for any :class:`models.contract.Model` is said here once, parametrised
over ``catalog.all_classes()``: the detectors, the forecasters and the correlation
model, each fitted with its cheap ``_test_config()`` on small seeded data. Fit
returns self, refit equals a fresh fit, the same config gives the same output,
save→load gives the same output from plain files, a broken or foreign saved model
is a ``ModelFormatError``, an unfitted model refuses, and configs are frozen,
keyword-only, JSON-friendly and validated. A class enrols by registering.

What a kind adds has its own suite: ``test_contract.py`` (detectors: scores in
[0, 1], causality, expected range, bad windows) and ``test_forecaster_contract.py``
(forecasters: horizons, quantiles, bad histories to forecast from).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import Detector, Forecaster, ModelFormatError, NotFittedError, catalog
from models.contract import Model
from tests.models.test_correlation import service_frame

CLASSES = catalog.all_classes()
#: Models of one series (a Series in); the others take a frame of several metrics.
SERIES_CLASSES = [cls for cls in CLASSES if not cls.supports_multivariate]
HORIZON = 24

#: The class whose ``load`` reads any saved model of a kind; a kind without one is read by its class.
KIND_READERS: dict[str, type[Model]] = {"detector": Detector, "forecaster": Forecaster}


def class_id(cls: type[Model]) -> str:
    return f"{cls.kind}-{cls.name}"


each_class = pytest.mark.parametrize("cls", CLASSES, ids=class_id)


def kind_reader(cls: type[Model]) -> type[Model]:
    return KIND_READERS.get(cls.kind, cls)


def readers(cls: type[Model]) -> list[type[Model]]:
    """The loaders that must read a saved ``cls``: its kind's reader and the class itself."""
    return list(dict.fromkeys([kind_reader(cls), cls]))


def fresh(cls: type[Model]) -> Model:
    return catalog.make(cls.name, cls.kind, **cls._test_config().to_dict())


# -- what each kind is fitted on and what it outputs ----------------------------------------
@dataclasses.dataclass(frozen=True)
class Inputs:
    history: Any  # what fit takes
    window: Any  # what the output is computed on
    other: Any  # another history (other level and spread, no season), to refit from


def _noise_like(data: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    values = np.random.default_rng(3).normal(500.0, 40.0, data.shape)
    if isinstance(data, pd.DataFrame):
        return pd.DataFrame(values, index=data.index, columns=data.columns)
    return pd.Series(values, index=data.index)


#: The calls that give a fitted model's output, per kind: what save→load, refit and seed keep.
OUTPUT_CALLS: dict[str, tuple[Callable[[Any, Any], Any], ...]] = {
    "detector": (lambda m, w: m.score(w), lambda m, w: m.expected_range(w)),
    "forecaster": (lambda m, w: m.forecast(HORIZON), lambda m, w: m.forecast(HORIZON, w)),
    "service_detector": (lambda m, w: m.score(w),),
}


def outputs(model: Model, window: Any) -> list[Any]:
    return [call(model, window) for call in OUTPUT_CALLS[model.kind]]


def assert_identical(a: Any, b: Any) -> None:
    if isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True)
    else:
        np.testing.assert_array_equal(a, b)


def assert_same_state(a: Model, b: Model) -> None:
    params, arrays = a._state_for_save()
    expected_params, expected_arrays = b._state_for_save()
    assert params == expected_params
    assert arrays.keys() == expected_arrays.keys()
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], expected_arrays[key])


@dataclasses.dataclass(frozen=True)
class Subject:
    model: Model
    inputs: Inputs
    outputs: list[Any]


@pytest.fixture(scope="module")
def inputs(history, window) -> dict[str, Inputs]:
    series = Inputs(history, window, _noise_like(history))
    service = service_frame(n=len(history))
    service_window = service_frame(seed=4, start="2026-01-09").iloc[:200]
    return {"detector": series, "forecaster": series,
            "service_detector": Inputs(service, service_window, _noise_like(service))}


@pytest.fixture(scope="module")
def subjects(inputs, history, fitted_on_history) -> Callable[[type[Model]], Subject]:
    """Each class fitted once (series models once per session) with its output; never mutate."""
    cache: dict[type[Model], Subject] = {}

    def subject(cls: type[Model]) -> Subject:
        if cls not in cache:
            data = inputs[cls.kind]
            model = (fitted_on_history(cls) if data.history is history
                     else fresh(cls).fit(data.history))
            cache[cls] = Subject(model, data, outputs(model, data.window))
        return cache[cls]

    return subject


@pytest.fixture
def subject(cls, subjects) -> Subject:
    return subjects(cls)


def test_every_kind_is_in_the_suite():
    assert {cls.kind for cls in CLASSES} == set(catalog.KINDS)
    assert set(KIND_READERS) | {"service_detector"} == set(catalog.KINDS)


# -- fit ----------------------------------------------------------------------------------
@each_class
def test_fit_returns_self_marks_fitted_and_leaves_its_input_alone(cls, inputs):
    history = inputs[cls.kind].history
    copy = history.copy()
    model = fresh(cls)
    assert model.is_fitted == (not cls.requires_fit)
    assert model.fit(copy) is model
    assert model.is_fitted
    assert_identical(copy, history)


@each_class
def test_refit_equals_fresh_fit(cls, subject):
    # Different level, spread and no season: every piece of learned state must be replaced.
    refitted = fresh(cls).fit(subject.inputs.other).fit(subject.inputs.history)
    assert_identical(outputs(refitted, subject.inputs.window), subject.outputs)
    assert_same_state(refitted, subject.model)


@each_class
def test_same_config_same_output(cls, subject):
    fitted = subject.model
    twin = cls(type(fitted.config).from_dict(fitted.config.to_dict())).fit(subject.inputs.history)
    assert twin.config == fitted.config
    assert_identical(outputs(twin, subject.inputs.window), subject.outputs)


# -- persistence --------------------------------------------------------------------------
@each_class
def test_save_load_gives_identical_output(cls, subject, tmp_path):
    fitted = subject.model
    fitted.save(tmp_path / "model")
    assert (tmp_path / "model" / "config.json").is_file()
    for reader in readers(cls):
        loaded = reader.load(tmp_path / "model")
        assert type(loaded) is cls
        assert loaded.config == fitted.config
        assert loaded.is_fitted
        assert_identical(outputs(loaded, subject.inputs.window), subject.outputs)
        assert_same_state(loaded, fitted)


@each_class
def test_saved_files_are_plain_formats(cls, subject, tmp_path):
    subject.model.save(tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    assert header["name"] == cls.name
    assert header["class"] == cls.__name__
    assert isinstance(header["format_version"], int)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


READERS = list(dict.fromkeys([*CLASSES, *KIND_READERS.values()]))


def _takes_for_its_namesake(reader: type[Model], cls: type[Model]) -> bool:
    """Whether ``reader``, of another kind, resolves a saved ``cls`` by name to its own class."""
    return (reader.kind != cls.kind and cls.name in catalog.classes(reader.kind)
            and issubclass(catalog.model_class(cls.name, reader.kind), reader))


def foreign_readers(cls: type[Model]) -> dict[type[Model], str]:
    """Every reader that must refuse a saved ``cls``, with what its refusal must name.

    A kind that knows the saved name must name the class the directory holds; one
    that does not, the unknown name. Another kind's namesake is apart (see below).
    """
    return {
        reader: cls.__name__ if cls.name in catalog.classes(reader.kind) else repr(cls.name)
        for reader in READERS
        if not issubclass(cls, reader) and not _takes_for_its_namesake(reader, cls)
    }


@each_class
def test_loading_into_another_class_or_kind_is_refused(cls, subject, tmp_path):
    subject.model.save(tmp_path)
    for reader, named in foreign_readers(cls).items():
        with pytest.raises(ModelFormatError, match=re.escape(named)):
            reader.load(tmp_path)


NAMESAKE_CASES = [(cls, reader) for cls in CLASSES for reader in READERS
                  if _takes_for_its_namesake(reader, cls)]


# Names are unique within a kind only: a saved ArimaDetector read by ArimaForecaster (or
# Forecaster) is refused by its header's class, not by the accident of differing configs.
@pytest.mark.parametrize(("cls", "reader"), NAMESAKE_CASES,
                         ids=[f"{class_id(c)}-into-{r.__name__}" for c, r in NAMESAKE_CASES])
def test_a_namesake_of_another_kind_refuses_a_saved_model_naming_its_class(
        cls, reader, subject, tmp_path):
    subject.model.save(tmp_path)
    with pytest.raises(ModelFormatError, match=cls.__name__):
        reader.load(tmp_path)


def _tamper(directory: Path, **changes: Any) -> None:
    path = directory / "config.json"
    header = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            header.pop(key)
        else:
            header[key] = value
    path.write_text(json.dumps(header))


@each_class
@pytest.mark.parametrize("version", [999, "1", None])
def test_tampered_format_version_is_refused(cls, subject, tmp_path, version):
    subject.model.save(tmp_path)
    _tamper(tmp_path, format_version=version)
    for reader in readers(cls):
        with pytest.raises(ModelFormatError, match="format_version"):
            reader.load(tmp_path)


@each_class
def test_unknown_name_is_a_format_error(cls, subject, tmp_path):
    subject.model.save(tmp_path)
    unknown = f"no_such_{cls.kind}"
    _tamper(tmp_path, name=unknown, **{"class": "NoSuchModel"})
    for reader in readers(cls):
        with pytest.raises(ModelFormatError, match=unknown):
            reader.load(tmp_path)


BROKEN = ["missing directory", "no state", "no arrays", "bad json"]
BROKEN_CASES = [(cls, broken) for cls in CLASSES for broken in BROKEN
                if broken != "no arrays" or cls.stores_arrays]


@pytest.mark.parametrize(("cls", "broken"), BROKEN_CASES,
                         ids=[f"{class_id(c)}-{b}" for c, b in BROKEN_CASES])
def test_unreadable_saved_model_is_a_format_error_naming_the_path(cls, broken, subject, tmp_path):
    directory = tmp_path / "model"
    if broken != "missing directory":
        subject.model.save(directory)
    if broken == "no state":
        (directory / "state.json").unlink()
    elif broken == "no arrays":
        (directory / "arrays.npz").unlink()
    elif broken == "bad json":
        (directory / "config.json").write_text("{ truncated")
    for reader in readers(cls):
        with pytest.raises(ModelFormatError, match=re.escape(str(directory))):
            reader.load(directory)


# -- not fitted ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [c for c in CLASSES if c.requires_fit], ids=class_id)
def test_unfitted_model_refuses_to_give_output_or_save(cls, inputs, tmp_path):
    model = fresh(cls)
    assert not model.is_fitted
    for call in OUTPUT_CALLS[cls.kind]:
        with pytest.raises(NotFittedError, match="fit"):
            call(model, inputs[cls.kind].window)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


# -- documented bad histories -------------------------------------------------------------
def bad_input(kind: str, series: pd.Series) -> Any:
    """``series`` spoilt in one documented way (the kinds of ``BAD_INPUTS``)."""
    s = series.copy()
    if kind == "ndarray":
        return s.to_numpy()
    if kind == "list":
        return s.tolist()
    if kind == "frame":
        return s.to_frame()
    if kind == "range index":
        return s.reset_index(drop=True)
    if kind == "text values":
        return s.astype(str).where(np.arange(len(s)) != 3, "high")
    if kind == "naive index":
        s.index = s.index.tz_localize(None)
        return s
    if kind == "unsorted index":
        return s.iloc[::-1]
    if kind == "duplicated index":
        index = s.index.to_numpy().copy()
        index[5] = index[4]
        s.index = pd.DatetimeIndex(index)
        return s
    if kind == "inf":
        s.iloc[20] = np.inf
        return s
    if kind == "-inf":
        s.iloc[20] = -np.inf
        return s
    raise AssertionError(kind)


#: A spoilt series and the error every per-series model refuses it with.
BAD_INPUTS = [
    ("ndarray", TypeError),
    ("list", TypeError),
    ("frame", TypeError),
    ("range index", TypeError),
    ("text values", TypeError),
    ("naive index", ValueError),
    ("unsorted index", ValueError),
    ("duplicated index", ValueError),
    ("inf", ValueError),
    ("-inf", ValueError),
]


@pytest.mark.parametrize("cls", SERIES_CLASSES, ids=class_id)
@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_fit_refuses_bad_histories(cls, history, kind, error):
    model = fresh(cls)
    with pytest.raises(error, match="history"):
        model.fit(bad_input(kind, history))
    assert model.is_fitted == (not cls.requires_fit)


# -- config -------------------------------------------------------------------------------
@each_class
def test_config_is_json_friendly(cls):
    for config in (cls._test_config(), cls.config_class()):
        as_dict = config.to_dict()
        assert type(config).from_dict(json.loads(json.dumps(as_dict))) == config


@each_class
def test_unknown_config_field_is_named(cls):
    with pytest.raises(ValueError, match="n_bogus_field"):
        catalog.make(cls.name, cls.kind, n_bogus_field=3)


@each_class
def test_config_fields_are_keyword_only_and_frozen(cls):
    config = cls.config_class()
    fields = dataclasses.fields(config)
    assert fields
    assert all(f.kw_only for f in fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, fields[0].name, None)


def _numeric_fields(cls: type[Model]) -> list[str]:
    config = cls.config_class()
    return [
        f.name
        for f in dataclasses.fields(config)
        if isinstance(getattr(config, f.name), int | float)
        and not isinstance(getattr(config, f.name), bool)
    ]


NUMERIC_CASES = [pytest.param(cls, field, id=f"{class_id(cls)}-{field}")
                 for cls in CLASSES for field in _numeric_fields(cls)]


@pytest.mark.parametrize(("cls", "field"), NUMERIC_CASES)
def test_absurd_numeric_hyperparameter_is_refused_naming_the_field(cls, field):
    with pytest.raises(ValueError, match=field):
        catalog.make(cls.name, cls.kind, **{field: -(10**9)})


def _other_configs(cls: type[Model], *, derived: bool) -> list[type]:
    """Config classes of the other catalogued classes, derived from ``cls``'s own or not."""
    return [c for c in dict.fromkeys(o.config_class for o in CLASSES)
            if c is not cls.config_class and issubclass(c, cls.config_class) == derived]


@each_class
def test_wrong_config_class_is_a_type_error(cls):
    for other in _other_configs(cls, derived=False):
        with pytest.raises(TypeError, match=cls.config_class.__name__):
            cls(other())


# SeasonalNaiveForecaster's config is the base ForecasterConfig: another forecaster's config,
# derived from it, must not pass (it would save fields its load refuses).
@pytest.mark.parametrize("cls", [c for c in CLASSES if _other_configs(c, derived=True)],
                         ids=class_id)
def test_another_models_config_derived_from_its_own_is_a_type_error_too(cls):
    for other in _other_configs(cls, derived=True):
        with pytest.raises(TypeError, match=cls.config_class.__name__):
            cls(other())
