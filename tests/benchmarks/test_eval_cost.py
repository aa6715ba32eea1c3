"""eval_cost.py's `--set`: EvalConfig fields, read as `scalevid eval --set` reads them."""

import pytest

import eval_cost
from scalevid.eval.config import EvalConfig


def test_settings_parse_as_scalevid_eval_set_and_build_a_config():
    items = ["attentive_lrs=[0.003]", "patience=20", 'precision="fp32"']
    overrides = eval_cost._settings(items)
    assert overrides == {"attentive_lrs": (0.003,), "patience": 20, "precision": "fp32"}
    config = EvalConfig(**overrides)
    assert config.attentive_lrs == (0.003,) and config.patience == 20


def test_accept_setting_without_a_value_names_the_form():
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        eval_cost._settings(["attentive_lrs"])
