"""Every suite option (-D NAME=VALUE) with its default and meaning, read from support/harness/config.py: the list
`behave -D help` prints.

    scripts/options
"""
from __future__ import annotations

import argparse
import sys

from support.harness.config import options_help


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="scripts/options", description=__doc__.split("\n\n")[0]).parse_args(
        sys.argv[1:] if argv is None else argv)
    print(options_help())
    return 0


if __name__ == "__main__":
    sys.exit(main())
