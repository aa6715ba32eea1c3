"""Config files: dataclass defaults, then a YAML file, then flags (one loader for every stage).

A stage's config is a dataclass with `to_dict()` and `from_dict()`; nested dataclasses (such as
`model:` in the training config) are nested mappings in YAML and dotted keys in flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml


class StageConfig(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=StageConfig)


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """`cls()` defaults, overridden by the YAML file at `path`, then by `overrides`.

    Override keys may be dotted (`model.depth`) to reach a nested config; None values are
    ignored, so flags the user did not give change nothing. Unknown keys are errors that name
    where they came from.
    """
    data: dict[str, Any] = cls().to_dict()
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read the config file ({err})") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must be a mapping of keys to values")
        _merge(data, loaded, source=str(path))
    for key, value in overrides.items():
        if value is None:
            continue
        head, _, rest = key.partition(".")
        _merge(data, {head: {rest: value}} if rest else {head: value}, source="flags")
    return cls.from_dict(data)  # type: ignore[attr-defined]


def _merge(base: dict[str, Any], new: dict[str, Any], *, source: str) -> None:
    for key, value in new.items():
        if key not in base:
            raise ValueError(f"{source}: unknown config key {key!r}; known: {sorted(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, source=source)
        else:
            base[key] = value
