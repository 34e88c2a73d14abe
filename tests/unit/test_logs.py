"""Reading container logs back: CRI records to lines, tail, follow, and Docker's time forms."""

from __future__ import annotations

import calendar
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kobako.cli.logs import LOGS
from kobako.errors import InvalidArgument
from kobako.runtime import logs
from kobako.runtime.logs import Entry, parse_tail, parse_time, read_file

#: One record as the monitor writes it: (stream, tag, text without a newline).
Record = tuple[str, str, bytes]

texts = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" "))
records = st.lists(
    st.tuples(st.sampled_from(["stdout", "stderr"]), st.sampled_from(["F", "P"]), texts),
    max_size=30,
)


def stamp(i: int) -> bytes:
    """The i-th record's time: one per 1.5 s from 2026-12-07, with nanoseconds."""
    secs = 1_796_601_600 + i * 3 // 2
    ns = 500_000_000 if i % 2 else 123_456_789
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode() + b".%09dZ" % ns


def cri(recs: list[Record]) -> bytes:
    return b"".join(
        b"%s %s %s %s\n" % (stamp(i), s.encode(), t.encode(), text)
        for i, (s, t, text) in enumerate(recs)
    )


def model(recs: list[Record], streams: tuple[str, ...] = ("stdout", "stderr")) -> list[Entry]:
    """What reading the records must give: whole lines in the order they end, each with the
    time of its first piece, then the lines left in pieces."""
    return [entry for _, entry in ends(recs, streams)]


def ends(recs: list[Record], streams: tuple[str, ...]) -> list[tuple[int, Entry]]:
    """:func:`model`'s lines, each after the index of the record that ends it (for a line
    left in pieces: its last piece)."""
    held: dict[str, tuple[bytes, bytes, int]] = {}
    out = []
    for i, (s, t, text) in enumerate(recs):
        if s not in streams:
            continue
        first, before, _ = held.pop(s, (stamp(i), b"", i))
        if t == "F":
            out.append((i, Entry(first, s, before + text + b"\n")))
        else:
            held[s] = (first, before + text, i)
    starts = sorted(held.items(), key=lambda kv: kv[1][0])
    return out + [(end, Entry(first, s, text)) for s, (first, text, end) in starts]


def last(recs: list[Record], streams: tuple[str, ...], n: int) -> list[Entry]:
    """The n lines whose last record comes last, in the order they are read."""
    lines = ends(recs, streams)
    if n >= len(lines):
        return [entry for _, entry in lines]
    cut = sorted(end for end, _ in lines)[-n] if n else len(recs)
    return [entry for end, entry in lines if end >= cut]


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@given(recs=records)
def test_records_read_back_as_the_lines_written(
    tmp_path_factory: pytest.TempPathFactory, recs: list[Record]
) -> None:
    path = write(tmp_path_factory.mktemp("l") / "log", cri(recs))
    assert list(read_file(path)) == model(recs)
    assert list(read_file(path, stderr=False)) == model(recs, ("stdout",))
    assert list(read_file(path, stdout=False)) == model(recs, ("stderr",))
    assert list(read_file(path, stdout=False, stderr=False)) == []


@given(recs=records, n=st.integers(0, 12), stderr=st.booleans())
def test_tail_is_the_last_n_lines(
    tmp_path_factory: pytest.TempPathFactory, recs: list[Record], n: int, stderr: bool
) -> None:
    """The last n lines by where they end in the file (a line left in pieces: its last
    piece), read in blocks that cut records anywhere."""
    path = write(tmp_path_factory.mktemp("l") / "log", cri(recs))
    streams = ("stdout", "stderr") if stderr else ("stdout",)
    with pytest.MonkeyPatch.context() as m:
        for chunk in (7, 1 << 16):
            m.setattr(logs, "_CHUNK", chunk)
            got = list(read_file(path, stderr=stderr, tail=n))
            assert got == last(recs, streams, n)


def follower(path: str, parts: list[bytes]) -> Callable[[], bool]:
    """A ``running`` check that appends the next part of the log at each call, and says the
    writer is gone once all are written."""
    pending = list(parts)

    def running() -> bool:
        if not pending:
            return False
        with open(path, "ab") as f:
            f.write(pending.pop(0))
        return True

    return running


@settings(max_examples=50)
@given(recs=records, cuts=st.lists(st.integers(0, 2000), max_size=5))
def test_follow_reads_records_as_they_are_appended(
    tmp_path_factory: pytest.TempPathFactory, recs: list[Record], cuts: list[int]
) -> None:
    """Written in parts cut anywhere, mid-record too: the same lines, each whole."""
    data = cri(recs)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    parts = [data[a:b] for a, b in itertools.pairwise(bounds)]
    path = write(tmp_path_factory.mktemp("l") / "log", b"")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(logs, "POLL_S", 0)
        got = list(read_file(path, running=follower(path, parts)))
    assert got == model(recs)


@given(recs=records, n=st.integers(0, 12))
def test_tail_when_following_counts_whole_lines(
    tmp_path_factory: pytest.TempPathFactory, recs: list[Record], n: int
) -> None:
    """A line still in pieces is not one yet: the last n whole lines, then, once the writer
    is gone, the lines left in pieces (from the tail's start: a stream silent since then
    shows the pieces it writes next, not those before)."""
    path = write(tmp_path_factory.mktemp("l") / "log", cri(recs))
    every = model(recs)
    whole = [e for e in every if e.text.endswith(b"\n")]
    pieces = {e.stream: e.text for e in every[len(whole) :]}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(logs, "POLL_S", 0)
        got = list(read_file(path, tail=n, running=follower(path, [b""])))
    got_whole = [e for e in got if e.text.endswith(b"\n")]
    assert got[: len(got_whole)] == got_whole == (whole[-n:] if n else [])
    for e in got[len(got_whole) :]:
        assert pieces[e.stream].endswith(e.text)


def test_pieces_join_and_spaces_survive(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log",
        b"2026-12-07T16:45:33.257361344Z stdout P  two  spaces \n"
        b"2026-12-07T16:45:34.000000000Z stderr F oops\n"
        b"2026-12-07T16:45:35.000000000Z stdout F and the rest\n"
        b"2026-12-07T16:45:36.000000000Z stdout F \n"
        b"2026-12-07T16:45:37.000000000Z stdout F\n"
        b"2026-12-07T16:45:38.000000000Z stdout P no newline\n"
        b"2026-12-07T16:45:39.000000000Z stdout F being writ",
    )
    got = list(read_file(path))
    assert [(e.stream, e.text) for e in got] == [
        ("stderr", b"oops\n"),
        ("stdout", b" two  spaces and the rest\n"),
        ("stdout", b"\n"),
        ("stdout", b"\n"),
        ("stdout", b"no newline"),
    ]
    assert got[1].stamp == b"2026-12-07T16:45:33.257361344Z"
    assert got[1].render(timestamps=True) == (
        b"2026-12-07T16:45:33.257361344Z  two  spaces and the rest\n"
    )
    assert got[1].time_ns == calendar.timegm((2026, 12, 7, 16, 45, 33)) * 10**9 + 257361344


def test_a_missing_log_has_no_lines(tmp_path: Path) -> None:
    assert list(read_file(str(tmp_path / "never-started.log"))) == []
    assert list(read_file("", tail=3)) == []
    assert list(read_file("", running=lambda: False)) == []


def test_since_and_until_filter_by_each_lines_first_piece(tmp_path: Path) -> None:
    recs: list[Record] = [("stdout", "F", b"%d" % i) for i in range(10)]
    path = write(tmp_path / "log", cri(recs))
    t = [Entry(stamp(i), "stdout", b"").time_ns for i in range(10)]

    def texts(**kw: int | None) -> list[bytes]:
        return [e.text for e in read_file(path, **kw)]

    assert texts(since=t[7]) == [b"7\n", b"8\n", b"9\n"]
    assert texts(since=t[7] + 1) == [b"8\n", b"9\n"]
    assert texts(until=t[2]) == [b"0\n", b"1\n", b"2\n"]
    assert texts(since=t[3], until=t[4]) == [b"3\n", b"4\n"]
    assert texts(tail=3, until=t[7]) == [b"7\n"]  # Docker's order: tail, then the times


def test_follow_ends_when_until_has_passed(tmp_path: Path) -> None:
    path = write(tmp_path / "log", cri([("stdout", "F", b"old")]))
    start = time.monotonic()
    got = list(read_file(path, until=time.time_ns() + 200_000_000, running=lambda: True))
    assert [e.text for e in got] == [b"old\n"]
    assert time.monotonic() - start < 5


@given(ns=st.integers(0, 4_102_444_800 * 10**9 - 1))
def test_rfc3339_times_parse_to_the_nanosecond(ns: int) -> None:
    secs, frac = divmod(ns, 10**9)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    assert parse_time(text) == ns
    assert Entry(text.encode(), "stdout", b"").time_ns == ns
    assert parse_time(f"{secs}.{frac:09d}") == ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1700000000", 1_700_000_000 * 10**9),
        ("1700000000.5", 1_700_000_000_500_000_000),
        ("2026-12-07T16:45:33Z", 1_796_661_933 * 10**9),
        ("2026-12-07T16:45:33.25Z", 1_796_661_933_250_000_000),
        ("2026-12-07T16:45:33+01:00", (1_796_661_933 - 3600) * 10**9),
        ("2026-12-07T16:45:33.5-02:30", (1_796_661_933 + 9000) * 10**9 + 500_000_000),
        ("2026-12-07T16:45Z", 1_796_661_900 * 10**9),
        ("2026-12-07T16Z", 1_796_659_200 * 10**9),
        ("2026-12-07Z", 1_796_601_600 * 10**9),
        ("2026-12-07+01:00", (1_796_601_600 - 3600) * 10**9),
    ],
)
def test_docker_time_forms(text: str, ns: int) -> None:
    assert parse_time(text) == ns


def test_local_times_use_the_local_zone_now() -> None:
    offset = time.localtime().tm_gmtoff
    assert parse_time("2026-12-07") == (1_796_601_600 - offset) * 10**9
    assert parse_time("2026-12-07T16:45:33.5") == (1_796_661_933 - offset) * 10**9 + 5 * 10**8


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("42s", 42),
        ("10m", 600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2h45m30.5s", 9930.5),
        ("300ms", 0.3),
        ("-10m", -600),
        ("+1s", 1),
        ("1500us", 0.0015),
        ("1500\u00b5s", 0.0015),
        ("7ns", 7e-9),
    ],
)
def test_durations_count_back_from_now(text: str, seconds: float) -> None:
    now = 1_800_000_000
    assert parse_time(text, now=now) == now * 10**9 - round(seconds * 10**9)


@pytest.mark.parametrize("text", ["", "0"])
def test_empty_and_zero_mean_no_limit(text: str) -> None:
    assert parse_time(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", 'failed to parse value as time or duration: "yesterday"'),
        ("10x", 'failed to parse value as time or duration: "10x"'),
        ("1.", 'failed to parse value as time or duration: "1."'),
        ("1h30", 'failed to parse value as time or duration: "1h30"'),
        ("2026-13-01", 'parsing time "2026-13-01": month must be in 1..12'),
        ("2026-02-30T00:00Z", 'parsing time "2026-02-30T00:00Z": day is out of range for month'),
        ("2026-12-07T16:45:33.Z", 'parsing time "2026-12-07T16:45:33.Z": bad fractional second'),
        ("-5", 'parsing time "-5": bad date'),
    ],
)
def test_bad_times_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_time(text)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("text", "lines"),
    [("all", None), ("5", 5), ("0", 0), ("+3", 3), ("-1", None), ("ten", None), (7, 7), ("", None)],
)
def test_tail_values_as_docker_reads_them(text: str | int, lines: int | None) -> None:
    assert parse_tail(text) == lines


@pytest.mark.parametrize(
    ("argv", "args", "follow", "tail"),
    [
        (["web"], ["web"], False, "all"),
        (["-f", "--tail", "3", "web"], ["web"], True, "3"),
        (["web", "-f", "-n", "2"], ["web"], True, "2"),
        (["--tail=1", "web", "extra"], ["web", "extra"], False, "1"),
        (["--", "-web"], ["-web"], False, "all"),
    ],
)
def test_flags_may_follow_the_container(
    argv: list[str], args: list[str], follow: bool, tail: str
) -> None:
    o = LOGS.parse(argv)
    assert (o.args, o.get_bool("follow"), o.get_string("tail")) == (args, follow, tail)


def test_a_huge_log_tail_reads_only_its_end(tmp_path: Path) -> None:
    """--tail seeks back from the end instead of reading the whole file."""
    line = b"2026-12-07T16:45:33.257361344Z stdout F " + b"x" * 100 + b"\n"
    path = tmp_path / "log"
    with open(path, "wb") as f:
        for _ in range(20):
            f.write(line * 1000)
    reads = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real(fd, n, offset)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(logs.os, "pread", counting)
        got = list(read_file(str(path), tail=2))
    assert [e.text for e in got] == [b"x" * 100 + b"\n"] * 2
    assert sum(reads) < 1 << 18
