"""The one config merge: dataclass defaults < YAML file < flags, for every stage.

A stage's config is a dataclass (optionally with `from_dict`, which builds its nested configs);
nested dataclasses (such as `model:` in the training config) are nested mappings in YAML and
dotted keys (`model.depth`) in flags. `merge` is the one way to lay one mapping over another:
the stages' configs, the recipes' `extends:` chains and `--set` overrides, and the demo all use
it. Which fields affect results is field metadata (`runtime(...)`), read by `result_settings`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")
Layer = tuple[str, Mapping[str, Any]]  # (where the values come from, for errors; the values)


class _Required:
    """The placeholder of a dataclass field without a default until a layer gives it."""

    def __deepcopy__(self, memo: dict) -> _Required:
        return self

    def __repr__(self) -> str:
        return "<required>"


REQUIRED = _Required()


def merge(
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    source: str | None = None,
    check_kinds: bool = False,
) -> dict[str, Any]:
    """A copy of `base` with `new` laid over it.

    Mappings merge key by key at every depth; any other value replaces. The keys of `new` may be
    dotted paths (`pretext.mask_ratio`, `eval.finetune.lr`) of any depth; keys inside its nested
    mappings are taken as written. With `source` the keys of `base` are all there is (a config):
    an unknown key is a ValueError naming `source` and the known keys. Without it (free-form
    documents such as recipes) new keys are added. With `check_kinds` a value must be of its
    base value's kind (a number for a number, a section for a section), else a ValueError
    names `source` and the key.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in new.items():
        parts = str(key).split(".")
        _put(merged, parts, copy.deepcopy(value), source=source, parent="", kinds=check_kinds)
    return merged


def _put(
    node: dict[str, Any],
    parts: list[str],
    value: Any,
    *,
    source: str | None,
    parent: str,
    kinds: bool = False,
) -> None:
    head, *rest = parts
    where = f"{parent}.{head}" if parent else head
    if source is not None and head not in node:
        place = f" in {parent!r}" if parent else ""
        raise ValueError(f"{source}: unknown config key {head!r}{place}; known: {sorted(node)}")
    if rest:
        if not isinstance(node.get(head), dict):
            if source is not None:
                raise ValueError(f"{source}: {where!r} is a value, not a section of keys")
            node[head] = {}
        _put(node[head], rest, value, source=source, parent=where, kinds=kinds)
    elif isinstance(node.get(head), dict) and isinstance(value, Mapping):
        for key, item in value.items():
            _put(node[head], [str(key)], item, source=source, parent=where, kinds=kinds)
    else:
        if kinds and source is not None:
            _check_kind(node[head], value, source=source, where=where)
        node[head] = value


_KINDS: tuple[tuple[tuple[type, ...], tuple[type, ...], str], ...] = (
    # (default's type, accepted value types, what to call it); bool before int: a bool is an int
    ((bool,), (bool,), "true or false"),
    ((int,), (int,), "an integer"),
    ((float,), (int, float), "a number"),
    ((str,), (str,), "a string"),
    ((list, tuple), (list, tuple), "a list"),
    ((dict,), (Mapping,), "a section of keys"),
)


def _check_kind(default: Any, value: Any, *, source: str, where: str) -> None:
    """A config value must be of its default's kind (a number where the default is a number,
    a section where it is a section), so that a wrong one is an error naming its key here
    rather than a TypeError deep inside a stage. None and required defaults take anything."""
    if value is None or default is None or default is REQUIRED:
        return
    for default_types, accepted, what in _KINDS:
        if isinstance(default, default_types):
            if isinstance(value, bool) and bool not in accepted or not isinstance(value, accepted):
                raise ValueError(f"{source}: {where!r} must be {what}, got {value!r}")
            return


def config_dict(base: type | Any) -> dict[str, Any]:
    """The fields of a dataclass config as a nested dict: a class's defaults (`REQUIRED` where a
    field has none) or an instance's values."""
    if not isinstance(base, type):
        return {f.name: _plain(getattr(base, f.name)) for f in dataclasses.fields(base)}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(base):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
        else:
            out[f.name] = REQUIRED
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_dict(value)
    return copy.deepcopy(value)


def build_config(base: type[C] | C, *layers: Layer) -> C:
    """`base` (a dataclass config class for its defaults, or an instance to start from) with
    each `(source, mapping)` layer merged over it in order (see `merge`)."""
    cls = base if isinstance(base, type) else type(base)
    data = config_dict(base)
    for source, values in layers:
        data = merge(data, values, source=source, check_kinds=True)
    missing = sorted(k for k, v in data.items() if v is REQUIRED)
    if missing:
        raise ValueError(f"{cls.__name__} needs a value for {missing}")
    from_dict = getattr(cls, "from_dict", None)
    return from_dict(data) if from_dict is not None else cls(**data)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file; errors name the file."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the config file ({err})") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a config file must be a mapping of keys to values")
    return loaded


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """`cls`'s defaults, overridden by the YAML file at `path`, then by `overrides` (flags).

    Override keys may be dotted (`model.depth`) to reach a nested config; None values are
    ignored, so flags the user did not give change nothing. Unknown keys are errors that name
    where they came from.
    """
    layers: list[Layer] = []
    if path is not None:
        layers.append((str(path), read_config_file(path)))
    layers.append(("flags", {k: v for k, v in overrides.items() if v is not None}))
    return build_config(cls, *layers)


def runtime(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A config field that does not change what its stage produces (paths, device, progress,
    batch sizes of pure inference): a stored result stays valid, and may be reused or resumed,
    under another value. Use in place of a default: `device: str = runtime("auto")`."""
    metadata = {**kwargs.pop("metadata", {}), "runtime": True}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def is_runtime(f: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with `runtime(...)`."""
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
            out[f.name] = value
    return out
