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


def test_dotted_settings_reach_the_nested_configs_over_the_demo_settings():
    overrides = eval_cost._settings(["finetune.batch_size=32", "attentive_lrs=[0.01]"])
    base = {"finetune.num_views": 4, "attentive_lrs": (0.001, 0.003), "patience": 7}
    config = eval_cost.eval_config(base, overrides)
    assert config.finetune.batch_size == 32 and config.finetune.num_views == 4
    assert config.attentive_lrs == (0.01,) and config.patience == 7
    assert config.device == "cpu" and config.progress is False
    assert eval_cost.eval_config({}, {}).finetune.num_views == EvalConfig().finetune.num_views
