"""The served model: loaded from the registry at start-up, swapped when the alias moves.

:class:`ModelWatcher` polls the registry every ``reload_interval_s`` and,
when the served alias points at another version, loads it beside the old
one and swaps it into the :class:`ModelHolder` in one assignment. A request
takes the holder's model once when it starts, so a request in flight
finishes on the version it began with and none is dropped; every response
names the version it used. A failed load keeps the old model and is
reported on ``/readyz``.

When the registry is unreachable at start-up (:func:`start_model`), the
service starts from the version it last loaded from the registry (kept in
its cache, see :mod:`registry.bundles`), or — without one — from no
trained model at all, scoring every series with the window baseline (its
own recent past); ``/readyz`` names the source. The watcher keeps asking
the registry and swaps the registry's version in once it answers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from models.base import NotFittedError
from models.bundle import DetectorBundle
from models.score_cache import ScoreCache
from registry.bundles import (
    ModelRef,
    ModelUnavailableError,
    alias_target,
    cached_bundle,
    load_bundle,
)
from serving.settings import Settings

__all__ = ["LoadedModel", "ModelHolder", "ModelUnavailableError", "ModelWatcher", "load_model",
           "start_model"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A bundle with the registry coordinates it came from."""

    bundle: DetectorBundle
    name: str
    version: str
    alias: str
    loaded_at: float
    #: Where it came from: "registry", or why the service runs on something else.
    source: str = "registry"


def model_ref(settings: Settings) -> ModelRef:
    """The served alias as :mod:`registry.bundles` finds it."""
    return ModelRef(tracking_uri=settings.tracking_uri, name=settings.model_name,
                    alias=settings.model_alias, cache_dir=settings.cache_dir,
                    timeout_s=settings.registry_timeout_s)


def load_model(settings: Settings) -> LoadedModel:
    """The version the served alias points at, from the registry (downloaded once).

    Raises
    ------
    ModelUnavailableError
        The alias is not set, the model does not exist or the store is unreachable.
    """
    version, bundle = load_bundle(model_ref(settings))
    return LoadedModel(bundle, settings.model_name, version, settings.model_alias, time.time())


def start_model(settings: Settings) -> LoadedModel:
    """The model to start serving: the registry's, else the cached one, else none.

    Only an unreachable or broken registry falls back; an alias that is not set in a
    reachable registry is still an error (nothing was ever trained). With
    ``settings.start_from_cache`` the registry is not asked.
    """
    if settings.start_from_cache:
        reason = "not asked at start-up: it failed the service moments ago"
    else:
        try:
            return load_model(settings)
        except ModelUnavailableError as error:
            if error.missing:
                raise
            reason = str(error)
        except OSError as error:  # the cache itself
            reason = f"{type(error).__name__}: {error}"
    return cached_model(settings, reason)


def cached_model(settings: Settings, reason: str) -> LoadedModel:
    """The version last loaded for the alias, from the cache; else the window baseline."""
    try:
        version, bundle = cached_bundle(model_ref(settings))
    except (OSError, ValueError, KeyError) as error:
        _log.error("registry unreachable (%s) and no cached model (%s): serving the window "
                   "baseline only", reason, error)
        return LoadedModel(DetectorBundle({}), settings.model_name, "none", settings.model_alias,
                           time.time(), source=f"window baseline only: registry unreachable "
                                               f"({reason[:200]}) and no cached model")
    _log.warning("registry unreachable (%s): serving cached version %s", reason, version)
    return LoadedModel(bundle, settings.model_name, version, settings.model_alias,
                       time.time(), source=f"cache: registry unreachable ({reason[:200]})")


class ModelHolder:
    """The model being served; replaced whole, so a request sees one version throughout.

    ``score_cache`` holds the scores this process computed (see
    :class:`models.score_cache.ScoreCache`), keyed by the model's bundle, so that a
    swapped-in version never reuses the last one's; a swap also empties it.
    """

    def __init__(self, model: LoadedModel | None = None,
                 score_cache: ScoreCache | None = None) -> None:
        self.model = model
        self.last_error: str | None = None
        self.score_cache = score_cache if score_cache is not None else ScoreCache()

    def require(self) -> LoadedModel:
        model = self.model
        if model is None:
            raise NotFittedError("no model is loaded yet; the service is starting")
        return model


class ModelWatcher:
    """Swaps a new version of the served alias into ``holder`` within ``interval_s``."""

    def __init__(self, settings: Settings, holder: ModelHolder) -> None:
        self.settings = settings
        self.holder = holder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Load and swap in the alias' version if it changed; True when a swap happened."""
        try:
            target = alias_target(model_ref(self.settings))
            current = self.holder.model
            if current is not None and current.version == target and current.source == "registry":
                self.holder.last_error = None
                return False
            loaded = load_model(self.settings)
        except (ModelUnavailableError, OSError, ValueError) as error:
            self.holder.last_error = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {error}"
            _log.warning("model reload failed; still serving the loaded version: %s", error)
            return False
        previous = self.holder.model.version if self.holder.model else None
        self.holder.model = loaded
        self.holder.last_error = None
        self.holder.score_cache.clear()  # the old version's scores are never read again
        _log.info("now serving %s version %s (was %s)", loaded.name, loaded.version, previous)
        return True

    def start(self) -> None:
        if self.settings.reload_interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_s):
            self.check()
