"""The benchmarks' command lines: whole-number and positive-number argument types, and bad input reported as
`jepa-agent` reports it, one line `error: ...` and exit status 2 (JEPA_AGENT_DEBUG=1 shows the traceback).

    parser = benchmark_parser(__doc__)
    parser.add_argument("--pairs", type=positive_int, default=20)
    if __name__ == "__main__":
        run_main(main)
"""
from __future__ import annotations

import argparse
import os
import sys

from agent.cli import USER_ERRORS, exit_with_error


def whole_number(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected {expected}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1, "a positive int")


def non_negative_int(text: str) -> int:
    return whole_number(text, 0, "an int >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):  # nan fails both comparisons
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected a positive number")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: argument --pairs: ...`, exit status 2 (no usage block)."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def benchmark_parser(docstring: str) -> argparse.ArgumentParser:
    """A parser whose --help shows the benchmark's whole docstring, example commands included."""
    return OneLineErrorParser(description=docstring, formatter_class=argparse.RawDescriptionHelpFormatter)


def run_main(main) -> None:
    """Call `main()`; a bad input it finds (a run directory that is not one, a bad override) ends as
    one line and exit status 2 instead of a traceback."""
    try:
        main()
    except USER_ERRORS as error:
        if os.environ.get("JEPA_AGENT_DEBUG"):
            raise
        exit_with_error(error)
