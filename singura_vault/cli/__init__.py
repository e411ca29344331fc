"""The ``singura-vault`` command line.

One module per command group adds its sub-commands to the parser and names, with
``set_defaults``, the function that runs each (``run``) and whether it needs the
vault's settings (``needs_settings``): ``serve`` (serve, health, version),
``database`` (migrate, backup, restore), ``keys``, ``audit`` and ``console``. ``main``
parses, loads the settings when asked, runs, and turns configuration errors into exit
code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from singura_vault import __version__
from singura_vault.cli import audit, console, database, keys, serve
from singura_vault.cli._common import EXIT_CONFIG, EXIT_USAGE, SubcommandParser
from singura_vault.config.environment import load_settings
from singura_vault.db.embedded import EmbeddedPostgresError
from singura_vault.db.migrations import MigrationError
from singura_vault.errors import ConfigError, VaultError
from singura_vault.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    # SubcommandParser at the top too: a usage error exits 1 whichever parser finds it
    # (`serve --bogus` is reported by this one, as an unrecognised argument). Every
    # parser below gets a description: tests/integration/test_cli_edges.py walks the tree for it.
    parser = SubcommandParser(
        prog="singura-vault",
        description="Multi-tenant credential vault served over gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"singura-vault {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=SubcommandParser
    )
    for group in (serve, database, keys, audit, console):
        group.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments:
        # No command at all: the whole help, which lists the commands, rather than
        # argparse's "required: COMMAND"; still a usage error, so the usage error's code.
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(arguments)
    try:
        if not args.needs_settings:
            code: int = args.run(args)
            return code
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        code = args.run(args, settings)
        return code
    except (ConfigError, MigrationError, EmbeddedPostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except VaultError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
