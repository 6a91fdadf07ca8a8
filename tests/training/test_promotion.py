"""The promotion gate's rules, on metric dictionaries (no MLflow)."""

from __future__ import annotations

import json

import pytest

from training.promotion import GateRule, gate, load_gate

RULES = (GateRule("f1", "max"), GateRule("mase", "min", tolerance=0.05))


def test_first_version_is_promoted():
    assert gate({"f1": 0.1}, None, RULES).promote


def test_at_least_as_good_on_every_rule_is_promoted():
    decision = gate({"f1": 0.8, "mase": 0.74}, {"f1": 0.8, "mase": 0.70}, RULES)
    assert decision.promote, decision.reason
    assert decision.compared["mase"] == {"challenger": 0.74, "champion": 0.70}


@pytest.mark.parametrize("mine", [{"f1": 0.79, "mase": 0.5}, {"f1": 0.9, "mase": 0.76}])
def test_worse_on_one_rule_is_kept(mine):
    decision = gate(mine, {"f1": 0.8, "mase": 0.70}, RULES)
    assert not decision.promote
    assert decision.reason.startswith("worse than the champion")


def test_a_metric_only_the_champion_has_fails_and_none_comparable_fails():
    assert not gate({"mase": 0.1}, {"f1": 0.5, "mase": 0.7}, RULES).promote
    nothing = gate({"other": 1.0}, {"other": 1.0}, RULES)
    assert not nothing.promote and "no gate metric" in nothing.reason
    nan = gate({"f1": float("nan"), "mase": 0.5}, {"mase": 0.7}, RULES)
    assert nan.promote and "skipped" in nan.reason and "f1" in nan.reason


def test_gate_rules_from_a_file_and_their_errors(tmp_path):
    path = tmp_path / "gate.json"
    path.write_text(json.dumps([{"metric": "holdout.combined.event_f1", "direction": "max",
                                 "tolerance": 0.01}]))
    assert load_gate(path) == (GateRule("holdout.combined.event_f1", "max", 0.01),)
    path.write_text(json.dumps([{"metric": "x", "direction": "up"}]))
    with pytest.raises(ValueError, match=r"gate\.json.*direction='up'"):
        load_gate(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="non-empty JSON list"):
        load_gate(path)
