"""Docker-style argument parsing shared by the verbs: one-line errors, no abbreviations."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn, TypeVar

from kobako.cli.main import fail
from kobako.errors import InvalidArgument

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are docker's one-liners (exit 125, via UsageError)."""

    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description, add_help=False, allow_abbrev=False)
        self.add_argument("--help", action="help", help="Print usage")

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            message = "unknown flag: " + message.split(": ", 1)[1].split()[0]
        elif message.endswith("expected one argument"):
            flag = message.split(":")[0].removeprefix("argument ").split("/")[-1]
            message = f"flag needs an argument: {flag}"
        fail(message)


def convert(flag: str, value: str, parse: Callable[[str], T]) -> T:
    """Parse a flag's value; a bad one becomes docker's 'invalid argument' line."""
    try:
        return parse(value)
    except InvalidArgument as e:
        fail(f'invalid argument "{value}" for "{flag}" flag: {e}')
