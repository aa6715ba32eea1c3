"""The `scalevid` command line: one subcommand per pipeline stage.

`main(argv)` is callable from tests and returns the exit code; logging is configured there, once.

Every subcommand with a stage config (extract, train, eval, make-dataset, demo) builds it the
same way, through `scalevid.config.build_config`: dataclass defaults < `--config` YAML file <
named flags < `--set KEY=VALUE` (any field, dotted for nested configs, checked against its
annotation); `--print-config` prints the result as YAML and stops. The named flags, a few per
subcommand for the settings typed daily, are rows of one table per subcommand (`Flag`: the flag
and the dotted key it sets); their types, choices and defaults are read from the dataclass, so
nothing here restates them. A flag the user did not give is None and changes nothing. Switches
are spelled `--name` / `--no-name` throughout.
"""

from scalevid.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
