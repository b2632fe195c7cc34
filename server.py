"""Run the aichat server: `python server.py` (settings from the environment and ./.env)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path

from aichat import __version__
from aichat.config import Config, ConfigError, load, settings_help

# The kernel's accept queue: aiohttp's default of 128 drops SYNs when a few hundred clients
# connect at once, and each dropped SYN costs the client a one-second retransmit.
BACKLOG = 2048
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description=f"aichat {__version__}: self-hosted AI chat backend.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (environment variables, or lines in ./.env; the environment wins):\n"
               + settings_help())
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    return parser.parse_args(argv)


def configure_logging(config: Config) -> None:
    logging.basicConfig(level=LOG_LEVELS[config.log_level],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the `speed` extra; see bench/README.md), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(config: Config) -> None:
    from aiohttp import web

    from aichat.accesslog import AccessLogger
    from aichat.app import create_app

    app = create_app(config)
    # Everything built so far lives as long as the process: move it out of the collector's
    # sight so each collection under load walks only the objects of live requests (-5% CPU
    # per stream in bench/run.py's hold scenarios).
    gc.collect()
    gc.freeze()
    web.run_app(app, host=config.host, port=config.port,
                handler_cancellation=True, print=None, loop=new_loop(), backlog=BACKLOG,
                access_log=logging.getLogger("aiohttp.access"), access_log_class=AccessLogger)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        config = load(dotenv=Path(args.env_file))
        configure_logging(config)
        logging.getLogger("aichat").info("aichat %s listening on %s:%d (%s mode, data in %s)",
                                         __version__, config.host, config.port, config.app_mode,
                                         config.data_dir)
        serve(config)
    except ConfigError as e:
        print(f"aichat: configuration error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"aichat: cannot start: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
