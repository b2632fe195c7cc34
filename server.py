"""Run the aichat server: `python server.py` (settings from the environment and ./.env)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aichat import __version__
from aichat.config import Config, ConfigError, load, settings_help

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


def serve(config: Config) -> None:
    from aiohttp import web

    from aichat.app import create_app

    web.run_app(create_app(config), host=config.host, port=config.port,
                handler_cancellation=True, print=None,
                access_log=logging.getLogger("aiohttp.access"))


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
