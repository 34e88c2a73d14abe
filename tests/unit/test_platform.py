"""``--platform`` values, as docker reads them."""

from __future__ import annotations

import pytest

from kobako.errors import InvalidArgument
from kobako.image.pull import parse_platform


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("linux/amd64", ("linux", "amd64", "")),
        ("linux/arm64/v8", ("linux", "arm64", "v8")),
        ("Linux/ARM/v7", ("linux", "arm", "v7")),
    ],
)
def test_parses(value: str, expected: tuple[str, str, str]) -> None:
    assert parse_platform(value) == expected


@pytest.mark.parametrize("value", ["", "amd64", "linux/", "/amd64", "a/b/c/d", "linux//v7"])
def test_rejects_naming_the_value(value: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown operating system or architecture") as e:
        parse_platform(value)
    assert f'"{value}"' in str(e.value)
