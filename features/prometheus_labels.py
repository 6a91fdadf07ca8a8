"""Prometheus series labels to the store's columns: the label rule and named queries.

Step 3 of :mod:`features.prometheus` ("labels to columns"), apart from the HTTP
import because ``aiops retrain`` and the label-config reader use it without
fetching anything. :mod:`features.prometheus` re-exports every public name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_SERVICE_LABELS = ("service", "job", "app")

_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
# "name=expr": an identifier, "=", and anything but "=" or "~" next (PromQL's "==" and "=~").
_NAMED_QUERY = re.compile(rf"^\s*({_NAME})\s*=(?![=~])\s*(\S.*)$", re.DOTALL)


class LabelRuleError(ValueError):
    """A series' labels do not give a service and a metric, or two series give the same pair."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelRule:
    """How a Prometheus series' labels become the store's ``service`` and ``metric``.

    Parameters
    ----------
    service_labels
        Labels tried in order; the first one the series carries (non-empty)
        names the service. Default ``("service", "job", "app")``.
    metric_label
        The label that names the metric when the query has no name of its own.
        Default ``"__name__"`` (the metric name; functions like ``rate`` drop it).
    keep_labels
        Keep the series' other labels in the store's ``labels`` map column
        (repeated on every row). Default False: they are dropped.
    """

    service_labels: tuple[str, ...] = DEFAULT_SERVICE_LABELS
    metric_label: str = "__name__"
    keep_labels: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.service_labels, str) or not isinstance(self.service_labels, Iterable):
            raise TypeError(f"service_labels must be a list of label names, got "
                            f"{self.service_labels!r}")
        labels = tuple(self.service_labels)
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(f"service_labels must be a non-empty list of label names, got "
                             f"{list(labels)!r}")
        object.__setattr__(self, "service_labels", labels)
        if not isinstance(self.metric_label, str) or not self.metric_label:
            raise ValueError(f"metric_label must be a label name, got {self.metric_label!r}")
        if not isinstance(self.keep_labels, bool):
            raise TypeError(f"keep_labels must be true or false, got {self.keep_labels!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str = "label rule") -> LabelRule:
        """Build a rule from a parsed JSON/YAML mapping; unknown keys are refused."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"{source} must be a mapping of service_labels, metric_label, "
                            f"keep_labels; got {type(mapping).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; accepted: {sorted(known)}")
        return cls(**dict(mapping))

    def identify(self, labels: Mapping[str, str], query: PromQuery) -> tuple[str, str, dict[str, str]]:
        """``(service, metric, other labels)`` of one series returned by ``query``.

        Raises
        ------
        LabelRuleError
            No service label is present, or the metric has no name.
        """
        service_label = self.service_label(labels)
        service = None if service_label is None else labels[service_label]
        metric = query.name or labels.get(self.metric_label) or None
        if service is None or metric is None:
            missing = []
            if service is None:
                missing.append(f"the service (none of the labels "
                               f"{', '.join(self.service_labels)} is set)")
            if metric is None:
                missing.append(f"the metric (no label {self.metric_label}; name the query "
                               f"as NAME=PROMQL)")
            raise LabelRuleError(f"query {query.text!r}: cannot tell {' nor '.join(missing)} "
                                 f"of series {_labels_text(labels)}")
        used = {self.metric_label, "__name__", service_label}
        return service, metric, {k: v for k, v in labels.items() if k not in used}

    def service_label(self, labels: Mapping[str, str]) -> str | None:
        """The label that names the service of a series with ``labels`` (None: none is set)."""
        return next((x for x in self.service_labels if labels.get(x)), None)

    def collision_advice(self, first: Mapping[str, str], second: Mapping[str, str],
                         query: PromQuery) -> str:
        """How to make two series of ``query`` that land on one service/metric one, or two.

        Aggregate by the label that names their service (the one label every series of the
        result keeps), select one with a matcher on the labels that differ, or, when a single
        label differs, make it the service.
        """
        differ = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
        by = self.service_label(first)
        advice = [f"they differ in {', '.join(differ)}; aggregate them to one per service "
                  f"(label {by}): `sum by ({by}) ({query.expr})`",
                  f"select one with a matcher on {', '.join(differ)}"]
        if len(differ) == 1:
            advice.append(f"keep one series per {differ[0]} with a labels config of "
                          f"service_labels: [{differ[0]}]")
        return ", or ".join(advice)


@dataclasses.dataclass(frozen=True)
class PromQuery:
    """A PromQL expression and, optionally, the metric name its series are stored under."""

    expr: str
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str) or not self.expr.strip():
            raise ValueError(f"a query needs a PromQL expression, got {self.expr!r}")
        if self.name is not None and not re.fullmatch(_NAME, self.name):
            raise ValueError(f"query name {self.name!r} is not a metric name "
                             f"([A-Za-z_:][A-Za-z0-9_:]*)")

    @classmethod
    def parse(cls, text: str) -> PromQuery:
        """``"cpu=rate(x[1m])"`` → named ``cpu``; ``"up{job='a'}"`` → unnamed."""
        if not isinstance(text, str):
            raise TypeError(f"a query must be text, got {type(text).__name__}")
        named = _NAMED_QUERY.match(text)
        if named:
            return cls(expr=named.group(2).strip(), name=named.group(1))
        return cls(expr=text.strip())

    @property
    def text(self) -> str:
        return f"{self.name}={self.expr}" if self.name else self.expr


def _labels_text(labels: Mapping[str, str]) -> str:
    inside = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inside + "}"
