"""The champion–challenger comparison: which champion, on which points, before the gate rules.

:func:`training.promotion.gate` says whether one set of metrics is at least as
good as another. What makes the comparison fair is deciding what to measure:
the champion as served on holdout points after its own training data, or its
configuration refitted on the challenger's training split (:func:`_compare`),
and loading the champion and moving the alias around that (:func:`_gate`).

Apart from :mod:`training.promotion` because that module stays pure (rules and
their reasons, no MLflow run, no fitting) and is read by
:mod:`training.options` for the default rules: this one refits and measures
through :mod:`training.holdout`, which imports the options, so inside
``promotion`` it would close an import cycle. Apart from :mod:`training.train`
because it changes with the comparison's fairness, not with the job's steps.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.base import ModelFormatError
from models.bundle import DetectorBundle
from registry.bundles import ModelRef, load_bundle
from training.holdout import _fit_and_measure, _Holdout, holdout_metrics
from training.options import TrainOptions
from training.promotion import GateDecision, gate, set_champion
from training.tracking import CHAMPION, alias_version

#: What :func:`load_champion` raises when the champion cannot be read.
CHAMPION_LOAD_ERRORS = (LookupError, MlflowException, OSError, ModelFormatError)


def load_champion(model_name: str) -> DetectorBundle:
    """The bundle of ``model_name``'s champion in the tracking store in use (one of
    :data:`CHAMPION_LOAD_ERRORS` when it cannot be read)."""
    with tempfile.TemporaryDirectory() as cache:
        _, champion = load_bundle(ModelRef(tracking_uri=mlflow.get_tracking_uri(),
                                           name=model_name, alias=CHAMPION,
                                           cache_dir=Path(cache)))
    return champion


def _gate(version: str, options: TrainOptions, measured: _Holdout | None) -> GateDecision:
    """Promote ``version`` if it is at least as good as the champion on data neither has seen.

    The challenger is measured as fitted on this run's training split. When enough of
    the holdout comes after the champion's training data ended, the champion as served
    is measured on those points; otherwise the champion's configuration, refitted on
    the same training split, is measured on the whole holdout (see :func:`_compare`).
    """
    champion_version = alias_version(options.model_name, CHAMPION)
    if champion_version is None:
        decision = gate({}, None, options.gate)
    elif measured is None:
        decision = GateDecision(False, "no holdout (holdout_fraction=0): nothing to compare the "
                                "challenger with the champion on; promote by hand", {})
    else:
        try:
            champion = load_champion(options.model_name)
        except CHAMPION_LOAD_ERRORS as error:
            decision = GateDecision(False, f"the champion (version {champion_version}) could "
                                    f"not be loaded to compare with: {error}", {})
        else:
            decision = _compare(champion, champion_version, measured, options)
    if decision.promote:
        set_champion(options.model_name, version, action="gate", reason=decision.reason,
                     by=f"run {mlflow.active_run().info.run_id}")
    return decision


#: The share of the holdout that must come after the champion's training end to measure the
#: champion as served on it; with less, its configuration is refitted on the training split.
MIN_UNSEEN_SHARE = 0.1


def _compare(champion: DetectorBundle, champion_version: str, measured: _Holdout,
             options: TrainOptions) -> GateDecision:
    """Gate the challenger against the champion on points neither was fitted on.

    Comparing with the champion on points it was trained on favours it: a retrain on
    a little more data than the champion had would never win. So either the champion
    is measured on the holdout points after its own training data (when at least
    :data:`MIN_UNSEEN_SHARE` of the holdout is there), or its configuration is fitted
    on the challenger's training split and both are measured on the whole holdout.
    A champion of the challenger's own configuration, fitted on that split, is the
    challenger's held-out model: the challenger, the same on more data, passes.
    """
    params = _run_params(options.model_name, champion_version)
    seen_until = _timestamp(params.get("time_end"))
    n_holdout = sum(len(v) for v in measured.holdout.values())
    unseen = ({k: v[v.index > seen_until] for k, v in measured.holdout.items()}
              if seen_until is not None else {})
    if sum(len(v) for v in unseen.values()) >= MIN_UNSEEN_SHARE * max(n_holdout, 1):
        window = {k: v for k, v in unseen.items() if len(v)}
        prefix = {k: pd.concat([measured.train_part[k], v[v.index <= seen_until]])
                  for k, v in measured.holdout.items() if k in window}
        labels = {k: v.reindex(window[k].index, fill_value=False)
                  for k, v in measured.labels.items() if k in window}
        note = (f"champion version {champion_version} as served, on the holdout after "
                f"{seen_until.isoformat()}, which it has not seen")
        mine = holdout_metrics(measured.bundle, prefix, window, labels, options.forecast_horizon)
        theirs = holdout_metrics(champion, prefix, window, labels, options.forecast_horizon)
    else:
        configuration = _configuration(params, options)
        if configuration is None:
            note = (f"champion version {champion_version} on the whole holdout, which it was "
                    f"trained on (its run records no configuration to refit): the comparison "
                    f"favours the champion")
            mine = measured.metrics
            theirs = holdout_metrics(champion, measured.train_part, measured.holdout,
                                     measured.labels, options.forecast_horizon)
        elif _same_configuration(configuration, options):
            note = (f"the configuration of champion version {champion_version}, which is the "
                    f"challenger's: fitted on this run's training split it is the challenger's "
                    f"held-out model, measured on the holdout neither has seen")
            mine = theirs = measured.metrics
        else:
            note = (f"the configuration of champion version {champion_version} refitted on "
                    f"this run's training split, on the holdout neither has seen")
            mine = measured.metrics
            theirs = _fit_and_measure(measured.train_part, measured.holdout, measured.labels,
                                      configuration, log=False).metrics
    mlflow.log_dict({"window": note, "challenger": mine, "champion": theirs},
                    "promotion_comparison.json")
    decision = gate(mine, theirs, options.gate)
    return dataclasses.replace(decision, reason=f"vs {note}: {decision.reason}")


def _configuration(params: dict[str, str], options: TrainOptions) -> TrainOptions | None:
    """The champion's models as its run recorded them, fitted as the challenger's are.

    The forecast horizon stays the challenger's, so that both are backtested and
    measured at the same horizon. None when the run did not record them.
    """
    try:
        detectors = tuple(params["detectors"].split(","))
        forecasters = tuple(params["forecasters"].split(","))
        configs = json.loads(params["detector_configs"])
        return dataclasses.replace(options, detectors=detectors, forecasters=forecasters,
                                   detector_configs=configs)
    except (KeyError, ValueError, TypeError):
        return None


def _same_configuration(champion: TrainOptions, challenger: TrainOptions) -> bool:
    return (champion.detectors == challenger.detectors
            and champion.forecasters == challenger.forecasters
            and json.dumps(champion.detector_configs, sort_keys=True)
            == json.dumps(challenger.detector_configs, sort_keys=True))


def _run_params(model_name: str, version: str) -> dict[str, str]:
    """The parameters of the run that trained ``version`` ({} if they cannot be read)."""
    try:
        run_id = MlflowClient().get_model_version(model_name, version).run_id
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException:
        return {}


def _timestamp(text: str | None) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(text) if text else None
    except ValueError:
        return None
