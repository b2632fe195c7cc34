"""`python -m aichat`: the same command line as `aichat` and `python server.py`."""

import sys

from aichat.cli.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m aichat"))
