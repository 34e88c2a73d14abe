"""The pure rules of volumes: Docker's name check, label filters, ``volume ls`` filters."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import InvalidArgument
from kobako.runtime.volumes import ANONYMOUS_LABEL, check_name, match_labels, select

DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


@given(st.text(max_size=12))
def test_names_are_checked_as_docker_checks_them(name: str) -> None:
    if DOCKER_NAME.fullmatch(name) and name.isascii():
        assert check_name(name) == name
    else:
        with pytest.raises(InvalidArgument, match="includes invalid characters") as caught:
            check_name(name)
        assert f"create {name}: " in str(caught.value)


def doc(name: str, **labels: str) -> dict[str, Any]:
    return {"Name": name, "Driver": "local", "Labels": labels or None}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], True),
        (["team"], True),
        (["team=kobako"], True),
        (["team=other"], False),
        (["!team"], False),
        (["!team=other"], True),
        (["team", "tier"], False),
        (["!tier"], True),
    ],
)
def test_label_filters(filters: list[str], expected: bool) -> None:
    assert match_labels(doc("v1", team="kobako"), filters) is expected


def test_select() -> None:
    docs = [doc("alpha", team="a"), doc("beta"), doc("c" * 64, **{ANONYMOUS_LABEL: ""})]
    users = {"alpha": ["0" * 64]}

    def names(**filters: list[str]) -> list[str]:
        return [d["Name"] for d in select(docs, users, filters)]

    assert names() == ["alpha", "beta", "c" * 64]
    assert names(dangling=["true"]) == ["beta", "c" * 64]
    assert names(dangling=["0"]) == ["alpha"]
    assert names(name=["et", "lph"]) == ["alpha", "beta"]
    assert names(label=["team"], driver=["local"]) == ["alpha"]
    assert names(driver=["nfs"]) == []
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling=maybe'"):
        names(dangling=["maybe"])
