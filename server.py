"""Run the aichat server from a checkout: `python server.py` (see `python server.py --help`)."""

import sys

from aichat.cli.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
