"""The command line: serve (the default) and the operator verbs, `backup`, `rotate-key` and
`migrate-to`.

Settings come from the environment and ./.env.

Installed, the command is `aichat` (or `python -m aichat`); from a checkout, `python server.py`.
Operator commands: `aichat backup PATH`, `aichat rotate-key [--new-key KEY]`,
`aichat migrate-to postgresql://...`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable

from aichat import __version__
from aichat.security.secrets_file import MIN_SECRET_CHARS
from aichat.settings.config import Config, ConfigError, load
from aichat.settings.docs import settings_help

# The kernel's accept queue: aiohttp's default of 128 drops SYNs when a few hundred clients
# connect at once, and each dropped SYN costs the client a one-second retransmit.
BACKLOG = 2048
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR}


def parse_args(argv: list[str], prog: str = "server.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"aichat {__version__}: self-hosted AI chat backend.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (environment variables, or lines in ./.env; the environment wins):\n"
               + settings_help())
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    commands = parser.add_subparsers(dest="command", title="commands (none: run the server)")
    backup = commands.add_parser(
        "backup", help="write a consistent copy of the database (the server may be running)",
        description="SQLite: copy the live database with VACUUM INTO. PostgreSQL: run "
                    "pg_dump (it must be installed, of the server's major version or newer) "
                    "into a custom-format archive, restorable with `pg_restore -d URL PATH`; "
                    "the password reaches it through PGPASSWORD, never the command line. "
                    "The secrets are not in the copy: back up the data folder's "
                    "encryption_key and jwt_secret (or the ENCRYPTION_KEY and JWT_SECRET "
                    "settings) too.")
    backup.add_argument("path", help="file to write; must not exist yet")
    rotate = commands.add_parser(
        "rotate-key", help="re-encrypt the stored API keys under a new ENCRYPTION_KEY "
                           "(stop the server first)",
        description="Re-encrypt every stored model API key under a new key in one "
                    "transaction. Stop the server first (with PostgreSQL: every instance; "
                    "the command refuses while one is connected). SQLite compacts the "
                    "database first. With data/encryption_key the file is replaced (the new "
                    "key is written to disk before the commit); with ENCRYPTION_KEY set "
                    "(always, with PostgreSQL), --new-key (or NEW_ENCRYPTION_KEY) is "
                    "required and ENCRYPTION_KEY must be set to it afterwards.")
    # A key on the command line shows in `ps` and shell history; NEW_ENCRYPTION_KEY does not.
    rotate.add_argument("--new-key", metavar="KEY",
                        default=os.environ.get("NEW_ENCRYPTION_KEY") or None,
                        help=f"the new key, at least {MIN_SECRET_CHARS} characters (default: "
                             "NEW_ENCRYPTION_KEY from the environment; generated when the key "
                             "lives in the data folder)")
    migrate = commands.add_parser(
        "migrate-to", help="copy the SQLite database, every row, into an empty PostgreSQL "
                           "database (stop the server first)",
        description="Copy every row of the SQLite database DATABASE_URL names (it is only "
                    "read, and must be at this version's schema: start the server on it "
                    "once first) into the PostgreSQL database at URL, in one transaction, "
                    "keeping the ids; the schema is created there. The target must hold no "
                    "aichat data. Afterwards run aichat with DATABASE_URL=URL and the same "
                    "ENCRYPTION_KEY and JWT_SECRET (the command says where they are). Leave "
                    "the password out of URL and set PGPASSWORD to keep it out of `ps`.")
    migrate.add_argument("url", metavar="URL", help="postgresql://user@host:port/database")
    return parser.parse_args(argv)


def configure_logging(config: Config) -> None:
    from aichat.http.requestid import handler
    logging.basicConfig(level=LOG_LEVELS[config.log_level],
                        handlers=[handler(config.log_format)])


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the `speed` extra; see bench/README.md), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def one_malloc_arena() -> None:
    """Let glibc's malloc keep one arena: by default each thread that allocates (aiosqlite's,
    the tokenizer's) gets its own, and their free space is not shared. Measured: idle RSS
    after start 45.0 -> 44.1 MB. No-op off glibc."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX = 1
    except (OSError, AttributeError):
        pass


def serve(config: Config) -> None:
    one_malloc_arena()  # before any thread starts
    from aiohttp import web

    from aichat.http.accesslog import AccessLogger
    from aichat.app import create_app

    app = create_app(config)
    # Everything built so far lives as long as the process: move it out of the collector's
    # sight so each collection under load walks only the objects of live requests (-5% CPU
    # per stream in bench/run.py's hold scenarios).
    gc.collect()
    gc.freeze()
    web.run_app(app, host=config.host, port=config.port,
                handler_cancellation=True, print=listening(config), loop=new_loop(),
                backlog=BACKLOG, access_log=logging.getLogger("aiohttp.access"),
                access_log_class=AccessLogger)


def listening(config: Config) -> Callable[[str], None]:
    """run_app's `print`: called once the sockets are bound, after the data folder, the secrets
    and the migrations are ready, so the log says "listening" only when it is true."""
    def announce(message: str) -> None:
        # aiohttp's message names the bound URLs (the real port when PORT=0).
        urls = re.findall(r"[a-z]+://[^\s,]+", message)
        logging.getLogger("aichat").info(
            "aichat %s listening on %s (%s mode, data in %s)", __version__,
            ", ".join(urls) or f"{config.host}:{config.port}", config.app_mode, config.data_dir)
    return announce


def run_command(args: argparse.Namespace, config: Config) -> int:
    from aichat.cli import maintenance

    try:
        if args.command == "backup":
            maintenance.backup(config, args.path)
        elif args.command == "migrate-to":
            from aichat.cli import transfer
            transfer.migrate_to(config, args.url)
        else:
            maintenance.rotate_key(config, args.new_key)
    except (maintenance.MaintenanceError, OSError) as e:
        print(f"aichat {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str], prog: str = "server.py") -> int:
    args = parse_args(argv, prog)
    try:
        config = load(dotenv=Path(args.env_file))
        if args.command:
            return run_command(args, config)
        configure_logging(config)
        logging.getLogger("aichat").info("aichat %s starting (%s mode, data in %s)",
                                         __version__, config.app_mode, config.data_dir)
        serve(config)
    except ConfigError as e:
        print(f"aichat: configuration error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"aichat: cannot start: {e}", file=sys.stderr)
        return 1
    return 0



def run() -> int:
    """The `aichat` console command."""
    return main(sys.argv[1:], prog="aichat")
