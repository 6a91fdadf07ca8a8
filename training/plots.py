"""PNG plots logged with a training run: forecasts against actuals, score traces with anomalies.

Drawn on the holdout, with the models fitted on the training part, so the
pictures show what the gate measured. A few series of each kind are drawn
(``max_series``), the ones with the most labelled anomalous points first.
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd

from features.series import SeriesKey
from models.alarms import AlarmPolicy, find_incidents
from models.bundle import DetectorBundle

_log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _most_labelled(holdout: dict[SeriesKey, pd.Series], labels: dict[SeriesKey, pd.Series],
                   n: int) -> list[SeriesKey]:
    def anomalous(key: SeriesKey) -> int:
        return int(labels[key].sum()) if key in labels else 0

    return sorted(holdout, key=lambda k: (-anomalous(k), k))[:n]


def score_figure(key: SeriesKey, window: pd.Series, score: np.ndarray,
                 truth: pd.Series | None, policy: AlarmPolicy):
    """Values with labelled anomalies shaded and paged incidents marked; the score beneath."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 4.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    top.plot(window.index, window.to_numpy(), lw=0.7, label="value")
    if truth is not None and truth.any():
        top.fill_between(window.index, 0, 1, where=truth.reindex(window.index, fill_value=False),
                         transform=top.get_xaxis_transform(), color="orange", alpha=0.25,
                         label="labelled anomaly")
    for incident in find_incidents(window.index, score, key[1], policy):
        top.axvspan(incident.start, incident.end, color="red", alpha=0.3)
    top.set_title(f"{key[0]}/{key[1]}: holdout, paged incidents in red", fontsize=9)
    top.legend(fontsize=7, loc="upper right")
    bottom.plot(window.index, score, lw=0.7, color="black")
    bottom.axhline(policy.for_index(window.index).threshold, color="red", lw=0.6, ls="--")
    bottom.set_ylim(0.9, 1.0005)
    bottom.set_ylabel("score", fontsize=8)
    fig.tight_layout()
    return fig


def forecast_figure(key: SeriesKey, history: pd.Series, actual: pd.Series,
                    frame: pd.DataFrame, forecaster: str):
    """The end of the history, the forecast with its 80 % interval, and what happened."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.2))
    tail = history.iloc[-3 * len(frame):]
    ax.plot(tail.index, tail.to_numpy(), lw=0.7, color="grey", label="history")
    ax.plot(actual.index, actual.to_numpy(), lw=0.8, color="black", label="actual")
    ax.plot(frame.index, frame["yhat"], lw=0.9, label=f"forecast ({forecaster})")
    ax.fill_between(frame.index, frame["q10"], frame["q90"], alpha=0.25, label="q10–q90")
    ax.set_title(f"{key[0]}/{key[1]}: forecast from the start of the holdout", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def log_plots(
    bundle: DetectorBundle,
    train_part: dict[SeriesKey, pd.Series],
    holdout: dict[SeriesKey, pd.Series],
    labels: dict[SeriesKey, pd.Series],
    forecast_horizon: int,
    *,
    max_series: int = 4,
    policy: AlarmPolicy | None = None,
) -> int:
    """Log score and forecast plots of up to ``max_series`` series each; returns the count."""
    plt = _pyplot()
    policy = policy or AlarmPolicy()
    logged = 0
    for key in _most_labelled({k: v for k, v in holdout.items() if k in bundle}, labels,
                              max_series):
        window = holdout[key]
        result = bundle.score(key[0], key[1], window)
        fig = score_figure(key, window, result.score, labels.get(key), policy)
        mlflow.log_figure(fig, f"plots/scores/{key[0]}__{key[1]}.png")
        plt.close(fig)
        logged += 1
    keys = [k for k in holdout if k in bundle.forecasters and k in train_part][:max_series]
    for key in keys if forecast_horizon else []:
        forecaster = bundle.forecasters[key]
        steps = min(forecast_horizon, forecaster.config.max_horizon, len(holdout[key]))
        forecast = bundle.forecast(key[0], key[1], steps, train_part[key])
        actual = holdout[key].iloc[:steps]
        fig = forecast_figure(key, train_part[key], actual, forecast.frame, forecast.forecaster)
        mlflow.log_figure(fig, f"plots/forecasts/{key[0]}__{key[1]}.png")
        plt.close(fig)
        logged += 1
    _log.info("logged %d plots", logged)
    return logged
