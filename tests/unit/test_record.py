"""kobako._record.Record behaves as a frozen, keyword-only dataclass."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako._record import Record
from kobako.runtime.spec import Namespaces, Process, Spec


class Point(Record):
    x: int
    y: int = 0
    label: str | None = None


class Point3(Point):
    z: int
    y: int = 7  # a new default for an inherited field keeps its place


class Other(Record):
    x: int
    y: int = 0
    label: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataPoint:
    x: int
    y: int = 0
    label: str | None = None


def test_fields_and_defaults_follow_the_class_bodies() -> None:
    assert Point._fields == ("x", "y", "label")
    assert Point3._fields == ("x", "y", "label", "z")
    assert Point3(x=1, z=3) == Point3(x=1, y=7, label=None, z=3)
    assert Point(x=1).y == 0


def test_keyword_only_with_dataclass_errors() -> None:
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        Point(x=1, w=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing required keyword arguments: 'x', 'z'"):
        Point3()  # type: ignore[call-arg]


def test_frozen() -> None:
    p = Point(x=1)
    with pytest.raises(AttributeError, match="'x'"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="'x'"):
        del p.x
    with pytest.raises(AttributeError):
        p.new = 1  # type: ignore[attr-defined]
    assert p == Point(x=1)


def test_equality_needs_the_same_class() -> None:
    assert Point(x=1) != Other(x=1)
    assert Point(x=1) != Point3(x=1, y=0, z=0)
    assert Point(x=1) != (1, 0, None)
    assert Point(x=1).__eq__(1) is NotImplemented


def test_mutable_default_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Bad\.items: mutable default \[\]"):

        class Bad(Record):
            items: list[int] = []  # noqa: RUF012


def test_replace() -> None:
    p = Point(x=1, label="a")
    assert p.replace(y=2) == Point(x=1, y=2, label="a")
    assert p == Point(x=1, label="a")
    assert type(Point3(x=1, z=2).replace(z=3)) is Point3
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        p.replace(w=1)


def test_match_by_keyword_only() -> None:
    match Point(x=1, y=2):
        case Point(x=1, y=y):
            assert y == 2
        case _:
            pytest.fail("no match")
    with pytest.raises(TypeError):
        match Point(x=1):
            case Point(1):  # type: ignore[misc]
                pass


def test_copy_and_pickle() -> None:
    p = Point3(x=1, z=(2, 3), label="a")  # type: ignore[arg-type]
    assert copy.copy(p) == p
    assert copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(p)) == p


def test_record_defaults_are_shared_records() -> None:
    spec = Spec(root="/", process=Process(args=("true",)))
    assert spec.namespaces == Namespaces()
    assert spec.namespaces is Spec(root="/x", process=spec.process).namespaces
    assert hash(spec) == hash(Spec(root="/", process=Process(args=("true",))))


values = st.integers() | st.text(max_size=5) | st.none() | st.tuples(st.integers())


@given(values, values, st.none() | st.text(max_size=5), values)
def test_as_a_dataclass(x: int, y: int, label: str | None, other_y: int) -> None:
    record, data = Point(x=x, y=y, label=label), DataPoint(x=x, y=y, label=label)
    assert repr(record) == repr(data).replace("DataPoint", "Point")
    assert hash(record) == hash(data)
    assert (record == Point(x=x, y=other_y, label=label)) == (
        data == DataPoint(x=x, y=other_y, label=label)
    )
    assert eval(repr(record), {"Point": Point}) == record
    assert record.replace(y=other_y) == Point(x=x, y=other_y, label=label)
