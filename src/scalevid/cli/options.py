"""How a stage subcommand builds its config, the same for all of them.

Named flags are rows of a `Flag` table (the flag and the dotted config key it sets); their types,
choices and help defaults are read from the config dataclass's annotations and defaults, so no
default or choice list is spelled twice. `stage_config` lays the `--config` YAML file, the named
flags and `--set KEY=VALUE` over the dataclass defaults, in that order; `printed` answers
`--print-config`. Switches are `--name` / `--no-name` (`Switch`) everywhere.
"""

from __future__ import annotations

import argparse
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from scalevid.config import (
    ConfigError,
    Layer,
    build_config,
    config_yaml,
    field_default,
    field_type,
    literal_choices,
    parse_settings,
    read_config_file,
)

OTHER_FEATURES_HELP = (
    "evaluate even when the stores (or the run's training store) come from different "
    "backbones or preprocessing; by default that is refused"
)


VERIFY_HELP = (
    "verify the store's checksums on open (--no-verify: for very large stores that `scalevid "
    "store check` verifies on a schedule, see docs/reliability.md)"
)


TIMEOUT_HELP = "seconds a torchrun rank waits for the others before the job stops"


# The input checks of eval, embed and search (scalevid/eval/checks.py, embed.py) raise plain
# ValueErrors, so for those subcommands (and recipe, which runs eval) a ValueError is still
# taken for the user's mistake.
EVAL_INPUT_ERRORS = (ValueError,)


class Flag(NamedTuple):
    """A named flag for one config key (dotted for nested configs).

    Its type, choices and default come from the config dataclass; `help` says what it means.
    `options` replace generated argparse options (a stricter `type`, a `metavar`); `required`
    flags may instead be keys of the `--config` file or `--set`; `switch` gives the values of
    `--name` / `--no-name` for a field that is not a bool; `unset` says what a None default
    stands for.
    """

    flag: str  # "--num-views"
    key: str  # "pretext.num_views"
    help: str = ""
    options: dict[str, Any] = {}
    required: bool = False
    switch: tuple[Any, Any] | None = None
    unset: str | Callable[[], str] = ""


class Switch(argparse.Action):
    """`--name` sets `dest` to values[0], `--no-name` to values[1]."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        values: tuple[Any, Any] = (True, False),
        **kwargs: Any,
    ) -> None:
        name = option_strings[0]
        super().__init__([name, "--no-" + name.removeprefix("--")], dest, nargs=0, **kwargs)
        self.values = values

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        off = bool(option_string and option_string.startswith("--no-"))
        setattr(namespace, self.dest, self.values[off])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def add_switch(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, default: bool, help: str
) -> None:
    """A `--name` / `--no-name` switch that is not a config field (`--progress` of import)."""
    dest = flag.removeprefix("--").replace("-", "_")
    shown = flag if default else "--no-" + flag.removeprefix("--")
    parser.add_argument(
        flag, action=Switch, dest=dest, default=default, help=f"{help} (default: {shown})"
    )


def _shown(value: Any) -> str:
    """A default as the help text shows it."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)


def signature_default(func: Callable[..., Any], name: str) -> Any:
    """The default of parameter `name` of `func`: the value an option of a subcommand without
    a stage config starts from (`search`'s `k`), so that the option and the help show it and
    nothing here restates it."""
    return inspect.signature(func).parameters[name].default


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """End the help of every option of `parser` and of its subcommands that has a default and
    does not name it yet with `(default: VALUE)`: a value option's default as argparse holds it
    (read from a dataclass or a signature where it is set). Flags (`add_flags`) and switches
    (`add_switch`) name theirs already; an option without a value (None, off) shows none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                show_defaults(child)
            continue
        default = action.default
        if action.help == argparse.SUPPRESS or "default:" in (action.help or ""):
            continue
        if any(default is unset for unset in (None, False, argparse.SUPPRESS)) or default == []:
            continue
        shown = f"default: {_shown(default)}".replace("%", "%%")
        action.help = f"{action.help} ({shown})" if action.help else shown


def _flag_options(cls: type, flag: Flag) -> dict[str, Any]:
    """argparse options for `flag` read from the annotation of its field in `cls`."""
    annotation = field_type(cls, flag.key)
    if flag.switch is not None or annotation is bool or annotation == bool | None:
        return {"action": Switch, "values": flag.switch or (True, False)}
    options: dict[str, Any] = {}
    element = annotation
    if typing.get_origin(annotation) in (tuple, list):
        element, options["nargs"] = typing.get_args(annotation)[0], "+"
    choices = literal_choices(element)
    if choices is not None:
        return {**options, "choices": choices, "type": type(choices[0])}
    plain = [a for a in typing.get_args(element) if a is not type(None)] or [element]
    if plain[0] in (int, float):
        options["type"] = plain[0]
    return {**options, "metavar": flag.flag.lstrip("-").replace("-", "_").upper()}


def _flag_help(flag: Flag, default: Any, others: Sequence[tuple[str, Any]]) -> str:
    """`flag.help` with the field's default (and its default under each of `others`' options
    where that differs)."""
    if flag.required:
        return f"{flag.help} (required)"
    unset = flag.unset() if callable(flag.unset) else flag.unset
    shown = unset if default is None and unset else _shown(default)
    if flag.switch is not None or isinstance(default, bool):
        values = flag.switch or (True, False)
        if default in values:  # a switch: name the spelling that is the default
            name = flag.flag.removeprefix("--")
            shown = flag.flag if default == values[0] else f"--no-{name}"
    for option, config in others:
        alternative = field_default(config, flag.key)
        if alternative != default:
            shown = f"{shown}; with {option}: {_shown(alternative)}"
    return f"{flag.help} (default: {shown})" if flag.help else f"default: {shown}"


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: Sequence[Flag],
    base: type | Any,
    *,
    others: Sequence[tuple[str, Any]] = (),
) -> None:
    """Add `flags` for config `base` (a dataclass config class, or an instance whose values are
    the defaults shown); each of `others`, (option, config), also shows the defaults under an
    option."""
    cls = base if isinstance(base, type) else type(base)
    for flag in flags:
        options = {**_flag_options(cls, flag), **flag.options}
        options["help"] = _flag_help(flag, field_default(base, flag.key), others)
        if "choices" in options and "metavar" in options:  # argparse would not list them
            options["help"] += f"; from {' '.join(map(str, options['choices']))}"
        parser.add_argument(flag.flag, dest=flag.key, default=None, **options)


def add_config_args(parser: argparse.ArgumentParser, cls_name: str, example: str) -> None:
    """`--config`, `--set` and `--print-config`, the same for every stage config; `example` is
    a `KEY=VALUE` for the help."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML file of {cls_name} keys (nested configs as sections); flags override it",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"set any {cls_name} key, dotted for nested ones (e.g. --set {example}); the "
        "value is read as YAML; repeatable; overrides the file and the flags",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the merged config as YAML (a --config file) and exit",
    )


def stage_layers(args: argparse.Namespace, cls: type, flags: Sequence[Flag]) -> list[Layer]:
    """The layers over `cls`'s defaults: the `--config` file, the named flags, `--set`.

    A required flag may instead be a key of the file or of `--set`, else it is a ConfigError
    naming both ways to give it; `--print-config` shows it as null (a file that still needs it).
    """
    from_file = read_config_file(args.config) if args.config else {}
    given = {f.key: getattr(args, f.key) for f in flags if getattr(args, f.key) is not None}
    settings = parse_settings(cls, args.settings)
    missing = [
        f
        for f in flags
        if f.required
        and f.key not in given
        and f.key not in settings
        and from_file.get(f.key) in (None, "")
    ]
    if missing and not args.print_config:
        raise ConfigError(
            f"{' and '.join(f.flag for f in missing)} required (on the command line, or as "
            f"{' and '.join(f'`{f.key}:`' for f in missing)} in a --config file)"
        )
    layers: list[Layer] = [("--print-config", {f.key: None for f in missing})]
    if args.config:
        layers.append((str(args.config), from_file))
    return [*layers, ("flags", given), ("--set", settings)]


def stage_config(args: argparse.Namespace, base: type | Any, flags: Sequence[Flag]) -> Any:
    """The stage config: `base` (a dataclass config class or instance) under `stage_layers`."""
    cls = base if isinstance(base, type) else type(base)
    return build_config(base, *stage_layers(args, cls, flags))


def need(args: argparse.Namespace, command: str, names: Sequence[str]) -> None:
    """Paths a command needs for its work but not for `--print-config`: a ConfigError if not
    given."""
    missing = [f"--{name}" for name in names if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"{command} needs {' and '.join(missing)}")


def printed(args: argparse.Namespace, config: Any) -> bool:
    """With `--print-config`: print `config` as YAML and say so (the command then stops)."""
    if args.print_config:
        print(config_yaml(config), end="")
    return bool(args.print_config)


def check_inputs(stores: dict[str, str], run: str | None, args: argparse.Namespace) -> None:
    """Before any work: features of one kind throughout (stores and the run's training store)."""
    from scalevid.eval.identity import check_same_features

    check_same_features(stores, run, allow=args.allow_other_features)
