"""Config files: dataclass defaults, then a YAML file, then flags (one loader for every stage).

A stage's config is a dataclass with `to_dict()` and `from_dict()`; nested dataclasses (such as
`model:` in the training config) are nested mappings in YAML and dotted keys in flags.
"""

from __future__ import annotations

import dataclasses
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


def runtime(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A config field that does not change what its stage produces (paths, device, progress,
    batch sizes of pure inference): a stored result stays valid, and may be reused or resumed,
    under another value. Use in place of a default: `device: str = runtime("auto")`."""
    metadata = {**kwargs.pop("metadata", {}), "runtime": True}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def is_runtime(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("runtime", False))


def result_settings(config: Any) -> dict[str, Any]:
    """The fields of a dataclass config that affect results, as a plain nested dict: every field
    except those declared with `runtime(...)`, recursing into nested dataclass configs."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if is_runtime(f):
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = result_settings(value)
        else:
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out
