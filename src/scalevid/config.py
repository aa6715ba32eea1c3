"""The one config merge: dataclass defaults < YAML file < flags, for every stage.

A stage's config is a dataclass (optionally with `from_dict`, which builds its nested configs);
nested dataclasses (such as `model:` in the training config) are nested mappings in YAML and
dotted keys (`model.depth`) in flags. `merge` is the one way to lay one mapping over another:
the stages' configs, the recipes' `extends:` chains and `--set` overrides, and the demo all use
it. Which fields affect results is field metadata (`runtime(...)`), read by `result_settings`.

Command lines reach any field by its dotted key: `field_type` and `field_default` read a field's
annotation and default (the CLI builds its flags' help and choices from them), `parse_settings`
turns `KEY=VALUE` strings into values checked against the annotations, and `config_yaml` is the
YAML a config file holds for a config (what `--print-config` prints).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

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


class ConfigError(ValueError):
    """A setting, or a combination of settings and inputs, that the user has to change: the
    command line prints it as one line (any other exception is a bug and keeps its traceback).
    The message names the key or flag and where it came from."""


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
        raise ConfigError(f"{source}: unknown config key {head!r}{place}; known: {sorted(node)}")
    if rest:
        if not isinstance(node.get(head), dict):
            if source is not None:
                raise ConfigError(f"{source}: {where!r} is a value, not a section of keys")
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
                raise ConfigError(f"{source}: {where!r} must be {what}, got {value!r}")
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
        raise ConfigError(f"{cls.__name__} needs a value for {missing}")
    from_dict = getattr(cls, "from_dict", None)
    try:
        return from_dict(data) if from_dict is not None else cls(**data)
    except ConfigError:
        raise
    except ValueError as err:  # a config's own checks (`__post_init__`): the user's values
        raise ConfigError(str(err)) from err


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file; errors name the file."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
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


# --------------------------------------------------------------------------- dotted keys


def field_type(cls: type, key: str) -> Any:
    """The annotation of the dotted `key` (`model.hidden`) of dataclass config `cls`, following
    nested dataclass configs; a ConfigError names an unknown key and the known ones."""
    node: Any = cls
    parts = key.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            raise ConfigError(f"{where!r} is a value, not a section of keys")
        hints = typing.get_type_hints(node)
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            place = f" in {where!r}" if where else ""
            raise ConfigError(f"unknown config key {part!r}{place}; known: {sorted(names)}")
        node = hints[part]
    return node


def field_default(base: type | Any, key: str) -> Any:
    """The value of the dotted `key` in `base` (a dataclass config class for its defaults, or an
    instance); `REQUIRED` for a field without a default."""
    node: Any = config_dict(base)
    for part in key.split("."):
        node = node[part]
    return node


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a `Literal[...]` annotation (also inside `X | None`), else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if _is_union(annotation):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is Literal:
                return typing.get_args(arg)
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


class _Mismatch(Exception):
    """A value that does not fit an annotation (internal to `_coerce`)."""


def _coerce(tp: Any, value: Any) -> Any:
    """`value` as a value of annotation `tp` (ints as floats, lists for tuples), else _Mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None) or value is None:
        if value is None and (tp is type(None) or _is_union(tp) and type(None) in args):
            return None
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if _is_union(tp):
        for arg in args:
            try:
                return _coerce(arg, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return [_coerce(a, v) for a, v in zip(args, value, strict=True)]
        return [_coerce(args[0], v) if args else v for v in value]
    return _coerce_plain(tp, value)


def _coerce_plain(tp: Any, value: Any) -> Any:
    """A value for a plain class: bool, int, float, str, a nested config (a mapping) or other."""
    if tp is bool or tp is int or tp is str:
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict or tp is dict:
        if isinstance(value, Mapping):
            return value
        raise _Mismatch
    return value


def _describe(annotation: Any) -> str:
    """What a value of `annotation` is, in words for an error message."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if _is_union(annotation):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin in (tuple, list):
        if args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
        return f"a list, each {_describe(args[0])}" if args else "a list"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in words:
        return words[annotation]
    return "a section of keys" if dataclasses.is_dataclass(annotation) else str(annotation)


def parse_settings(cls: type, items: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` strings as {dotted key: value} for dataclass config `cls`.

    A value is read as YAML (`3`, `1e-3`, `[0, 1]`, `null`, `{hidden: 64}`) and must fit the
    field's annotation; where it does not but the text itself does (a string field given `on` or
    `1`), the text is the value, and a single value for a list field is a list of one. An
    unknown key or a value that fits neither way is a ConfigError naming `source` and the key.
    """
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{source} expects KEY=VALUE, got {item!r}")
        try:
            annotation = field_type(cls, key)
        except ConfigError as err:
            raise ConfigError(f"{source} {key}: {err}") from None
        settings[key] = _parse_value(annotation, text, where=f"{source} {key}")
    return settings


def _parse_value(annotation: Any, text: str, *, where: str) -> Any:
    """The first of (`text` read as YAML, `text` itself, a list of the one value) that fits."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    candidates = [value, text]
    if typing.get_origin(annotation) in (tuple, list) and not isinstance(value, (list, tuple)):
        candidates.append([value])
    for candidate in candidates:
        try:
            return _coerce(annotation, candidate)
        except _Mismatch:
            continue
    raise ConfigError(f"{where}: must be {_describe(annotation)}, got {text!r}")


def config_yaml(config: Any) -> str:
    """A dataclass config as the YAML of a config file that rebuilds it (`--print-config`)."""
    return yaml.safe_dump(_yaml_plain(config_dict(config)), sort_keys=False)


def _yaml_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _yaml_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_plain(v) for v in value]
    return value
