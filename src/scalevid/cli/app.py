"""The `scalevid` parser and `main(argv)`: logging configured once; user errors as one line.

The global options (-v, -q) work before or after the subcommand; every option's help ends with
its default (`scalevid.cli.options.show_defaults`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from scalevid.cli.options import show_defaults
from scalevid.cli.stages import add_demo, add_eval, add_extract, add_make_dataset, add_train
from scalevid.cli.tools import add_embed_search, add_import, add_recipe, add_store
from scalevid.config import ConfigError
from scalevid.hardware import flush_denormals

logger = logging.getLogger("scalevid")


def build_parser() -> argparse.ArgumentParser:
    """The `scalevid` parser: global options and one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="scalevid",
        description="SCALE: long-range video representations from frozen backbones.",
    )
    from scalevid import __version__

    parser.add_argument("--version", action="version", version=f"scalevid {__version__}")
    _add_global_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_demo,
        add_make_dataset,
        add_extract,
        add_import,
        add_store,
        add_train,
        add_eval,
        add_embed_search,
        add_recipe,
    ):
        add(sub)
    for subparser in _subparsers(parser):
        # SUPPRESS: a subcommand that is not given -q leaves the value set before it alone
        _add_global_options(subparser, default=argparse.SUPPRESS)
    show_defaults(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """-v and -q: on the top-level parser and again on every subcommand's, so that both
    `scalevid -q train ...` and `scalevid train ... -q` work."""
    group = parser.add_argument_group("global options")
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug logging"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="warnings and errors only"
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones (`store check`) included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += [child, *_subparsers(child)]
    return found


def _user_errors(args: argparse.Namespace) -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix (a setting, a path, a file, a store, a video,
    a device, a diverging run): `main` prints them as one line. Any other exception is a bug in
    scalevid and keeps its traceback. A subcommand may add its own (`user_errors` default)."""
    from scalevid.backbones import BackboneError
    from scalevid.data.decode import VideoError
    from scalevid.data.lists import DatasetError
    from scalevid.demo.synthetic import SyntheticDatasetError
    from scalevid.eval.identity import FeatureIdentityError
    from scalevid.hardware import DeviceError
    from scalevid.store import StoreError
    from scalevid.train.checkpoint import CheckpointError
    from scalevid.train.engine import NonFiniteLossError

    return (
        ConfigError,
        OSError,
        StoreError,
        BackboneError,
        DatasetError,
        VideoError,
        SyntheticDatasetError,
        DeviceError,
        CheckpointError,
        NonFiniteLossError,
        FeatureIdentityError,
        *getattr(args, "user_errors", ()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `scalevid ARGV`; returns the exit code (2 for a user error, printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    flush_denormals()  # before torch's first parallel op: its intra-op threads inherit it
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        logger.error("interrupted; re-run the same command (with --resume for train) to continue")
        return 130
    except _user_errors(args) as err:
        logger.debug("details", exc_info=True)
        logger.error("%s", err)
        return 2
