"""The one config merge: dataclass defaults < YAML < flags; runtime fields left out of results."""

from dataclasses import dataclass, field

import pytest

from scalevid.config import load_config, result_settings, runtime


@dataclass
class Inner:
    depth: int = 2
    workers: int = runtime(4)

    def to_dict(self):
        return {"depth": self.depth, "workers": self.workers}


@dataclass
class Outer:
    lr: float = 0.1
    device: str = runtime("auto")
    inner: Inner = field(default_factory=Inner)

    def to_dict(self):
        return {"lr": self.lr, "device": self.device, "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, d):
        return cls(lr=d["lr"], device=d["device"], inner=Inner(**d["inner"]))


def test_result_settings_leave_out_runtime_fields_at_every_depth():
    cfg = Outer(device="cuda", inner=Inner(depth=3, workers=8))
    assert result_settings(cfg) == {"lr": 0.1, "inner": {"depth": 3}}
    assert result_settings(Outer()) == result_settings(Outer(device="cpu", inner=Inner(workers=1)))


def test_yaml_then_flags_override_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\ninner: {depth: 5}\n")
    cfg = load_config(Outer, path, **{"inner.workers": 2, "lr": None})
    assert (cfg.lr, cfg.inner.depth, cfg.inner.workers, cfg.device) == (0.5, 5, 2, "auto")


def test_unknown_keys_name_their_source(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner: {deep: 1}\n")
    with pytest.raises(ValueError, match="c.yaml.*'deep'"):
        load_config(Outer, path)
    with pytest.raises(ValueError, match="flags.*'nope'"):
        load_config(Outer, None, nope=1)
