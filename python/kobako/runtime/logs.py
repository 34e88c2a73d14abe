"""A container's log read back as ``docker logs`` shows it.

The monitor (``rust/monitor``) appends one record per line to the container's log file, in
the CRI format that conmon also writes::

    2026-12-07T16:45:33.257361344Z stdout F hello world
    TIME (RFC 3339, ns, UTC)       STREAM TAG TEXT

``F`` ends a line (the text is the line without its newline). ``P`` is a piece of a line that
the next record of the same stream continues: a line longer than the monitor's buffer, or a
last line that had no newline. :func:`read` puts the pieces back together and yields whole
lines (:class:`Entry`), each with the time of its first piece; a last line without a newline
stays without one.

Options follow Docker's daemon: ``tail`` counts lines from the end of the log and is applied
first, then ``since`` (lines before it are skipped) and ``until`` (the first line after it
ends the output). ``follow`` keeps reading what the monitor appends until the container is
no longer running and the file is drained. A record the monitor is still writing (no newline
yet) is left for the next read; a missing file (a container never started) has no lines.

:func:`parse_time` and :func:`parse_tail` read ``--since``/``--until`` and ``--tail`` as
Docker does.
"""

from __future__ import annotations

import os
import time

from kobako.errors import ContainerNotFound, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from kobako.image.store import Store

__all__ = ["Entry", "parse_tail", "parse_time", "read", "read_file"]

#: How often a followed log is polled for new records, in seconds.
POLL_S = 0.1
#: Bytes read at once.
_CHUNK = 1 << 16
_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}
_DIGITS = "0123456789"
#: Go's duration units, in nanoseconds (``time.ParseDuration``).
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


class Entry:
    """One line of a container's output.

    Attributes:
        stamp: When its first piece was logged, as the log says it (``2026-12-07T16:45:33.
            257361344Z``: RFC 3339, nanoseconds, UTC, which is Docker's ``-t`` form too).
        stream: ``"stdout"`` or ``"stderr"``.
        text: The line with its newline (none if the container's output ended without one).
    """

    __slots__ = ("stamp", "stream", "text")

    def __init__(self, stamp: bytes, stream: str, text: bytes) -> None:
        self.stamp = stamp
        self.stream = stream
        self.text = text

    def __repr__(self) -> str:
        return f"Entry({self.stamp!r}, {self.stream!r}, {self.text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.stamp, self.stream, self.text) == (other.stamp, other.stream, other.text)

    def __hash__(self) -> int:
        return hash((self.stamp, self.stream, self.text))

    @property
    def time_ns(self) -> int:
        """:attr:`stamp` as nanoseconds since the Unix epoch (0 if it is malformed)."""
        return _stamp_ns(self.stamp)

    def render(self, timestamps: bool = False) -> bytes:
        """The line as ``docker logs`` prints it, after its time if ``timestamps``."""
        return self.stamp + b" " + self.text if timestamps else self.text


def read(
    store: Store,
    doc: dict[str, Any],
    *,
    stdout: bool = True,
    stderr: bool = True,
    since: int | None = None,
    until: int | None = None,
    tail: int | None = None,
    follow: bool = False,
) -> Iterator[Entry]:
    """A container's log, line by line (``docker logs``).

    Args:
        store: The store the container is in.
        doc: The container's record.
        stdout: Include what it wrote to stdout.
        stderr: Include what it wrote to stderr.
        since: Skip lines logged before this time (Unix nanoseconds).
        until: End with the last line logged at or before this time (Unix nanoseconds).
        tail: Only the last ``tail`` lines (of the streams asked for); None: all.
        follow: Go on with the lines logged from now on, until the container stops.
    """
    path = doc.get("LogPath") or ""
    running = _running_check(store, doc["Id"]) if follow else None
    return read_file(
        path,
        stdout=stdout,
        stderr=stderr,
        since=since,
        until=until,
        tail=tail,
        running=running,
    )


def read_file(
    path: str,
    *,
    stdout: bool = True,
    stderr: bool = True,
    since: int | None = None,
    until: int | None = None,
    tail: int | None = None,
    running: Callable[[], bool] | None = None,
) -> Iterator[Entry]:
    """The lines of a log file; see :func:`read`.

    Args:
        running: Follow the file while this says the writer is still there (checked before
            each read, so that the file is drained after it says no); None: do not follow.
    """
    streams = frozenset(k for k, want in ((b"stdout", stdout), (b"stderr", stderr)) if want)
    source = _Source(path)
    try:
        yield from _lines(source, streams, since, until, tail, running)
    finally:
        source.close()


def _lines(
    source: _Source,
    streams: frozenset[bytes],
    since: int | None,
    until: int | None,
    tail: int | None,
    running: Callable[[], bool] | None,
) -> Iterator[Entry]:
    if not streams:
        return
    joiner = _Joiner(streams)
    alive = running is not None and running()
    if tail is not None:
        source.seek_tail(tail, streams, whole_partials=not alive)
    past = until is not None and time.time_ns() > until
    batch: Iterable[tuple[int, Entry]] = joiner.lines(source.records(), flush=not alive)
    if tail is not None:
        batch = _last(list(batch), tail)
    while True:
        for _, entry in batch:
            if since is not None or until is not None:
                t = entry.time_ns
                if until is not None and t > until:
                    return
                if since is not None and t < since:
                    continue
            yield entry
        if not alive or past:
            return
        assert running is not None
        time.sleep(POLL_S)
        alive = running()  # before reading: what it wrote before it stopped is read now
        past = until is not None and time.time_ns() > until
        batch = joiner.lines(source.records(), flush=not alive)


def _last(lines: list[tuple[int, Entry]], n: int) -> list[tuple[int, Entry]]:
    """The ``n`` lines that end last in the log, in the order they came."""
    if len(lines) <= n:
        return lines
    if n == 0:
        return []
    first = sorted(end for end, _ in lines)[-n]
    return [line for line in lines if line[0] >= first]


class _Joiner:
    """Puts the ``P`` pieces of each stream back together with the record that ends them."""

    def __init__(self, streams: frozenset[bytes]) -> None:
        self.streams = streams
        #: stream -> (time of its first piece, the pieces, the number of its last record)
        self.pending: dict[bytes, tuple[bytes, list[bytes], int]] = {}
        self.count = 0  # records read

    def lines(self, records: Iterator[bytes], *, flush: bool) -> Iterator[tuple[int, Entry]]:
        """The lines that ``records`` end, and with ``flush`` those left in pieces (their
        stream ended without a newline, oldest first); each after the number of the record
        that ends it."""
        for raw in records:
            self.count += 1
            parts = raw.split(b" ", 3)
            if len(parts) == 3:
                parts.append(b"")  # an empty text written without its separating space
            if len(parts) != 4 or parts[1] not in self.streams:
                continue
            stamp, stream, tag, text = parts
            held = self.pending.get(stream)
            if tag == b"P":
                if held is None:
                    self.pending[stream] = (stamp, [text], self.count)
                else:
                    held[1].append(text)
                    self.pending[stream] = (held[0], held[1], self.count)
            elif tag == b"F":
                if held is None:
                    yield self.count, Entry(stamp, _STREAMS[stream], text + b"\n")
                else:
                    del self.pending[stream]
                    line = b"".join(held[1]) + text + b"\n"
                    yield self.count, Entry(held[0], _STREAMS[stream], line)
        if flush:
            for stream, (stamp, pieces, end) in self.pending.items():
                yield end, Entry(stamp, _STREAMS[stream], b"".join(pieces))
            self.pending.clear()


class _Source:
    """A log file read from an offset, one whole record at a time (a record being written
    is left for the next read). A missing file reads as empty until it appears."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.offset = 0
        self.rest = b""

    def _open(self) -> bool:
        if self.fd is None and self.path:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
        return self.fd is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def records(self) -> Iterator[bytes]:
        """The whole records appended since the last call, read as they are asked for."""
        if not self._open():
            return
        assert self.fd is not None
        while chunk := os.pread(self.fd, _CHUNK, self.offset):
            self.offset += len(chunk)
            data = self.rest + chunk
            cut = data.rfind(b"\n") + 1
            self.rest = data[cut:]
            if cut:
                yield from data[: cut - 1].split(b"\n")

    def seek_tail(self, n: int, streams: frozenset[bytes], *, whole_partials: bool) -> None:
        """Start reading where at least the last ``n`` lines of ``streams`` begin.

        Lines are counted back from the end of the file by the record that ends them. The
        start is a record boundary that no line of those streams crosses, so every line read
        from it is whole: a stream's records after it follow one of its ``F`` records, or
        none. ``whole_partials``: count a stream's trailing pieces (no record ended them
        yet) as a line where the last of them is, as a reader that does not follow shows
        them. (A follower misses the first pieces of a line only if its stream has written
        nothing since, even though other streams wrote n lines: finding them would mean
        reading back through the whole file for every silent stream.)
        """
        if not self._open():
            return
        assert self.fd is not None
        lines = 0
        seen: set[bytes] = set()  # streams with records after the place reached
        start: int | None = None  # the boundary found so far
        unsure: set[bytes] = set()  # streams whose record before ``start`` is not seen yet
        for end, stream, tag in _backward(self.fd, os.fstat(self.fd).st_size):
            if stream not in streams:
                continue
            if start is None:
                if tag == b"F" or (whole_partials and stream not in seen):
                    lines += 1
                seen.add(stream)
                if lines > n and tag == b"F":
                    start, unsure = end, seen - {stream}
            elif stream in unsure:
                if tag == b"F":
                    unsure.discard(stream)
                else:  # a line of this stream runs across the boundary: find an earlier one
                    start = None
            else:
                seen.add(stream)  # a boundary found further back will have this after it
            if start is not None and not unsure:
                self.offset = start
                return
        self.offset = 0


def _backward(fd: int, size: int) -> Iterator[tuple[int, bytes, bytes]]:
    """The whole records of a log file, last first: (offset after it, stream, tag)."""
    pos = size
    head = b""  # the start of the record that the previous block began in the middle of
    data_end: int | None = None
    while pos > 0:
        start = max(0, pos - _CHUNK)
        data = os.pread(fd, pos - start, start) + head
        if data_end is None:  # the last whole record not found yet: skip what follows it
            cut = data.rfind(b"\n") + 1
            if not cut:
                pos = start
                continue
            data, data_end = data[:cut], start + cut
        parts = data.split(b"\n")[:-1]
        head = b""
        if start > 0 and parts:
            head = parts.pop(0) + b"\n"
        end = data_end
        for raw in reversed(parts):
            fields = raw.split(b" ", 3)
            if len(fields) >= 3:
                yield end, fields[1], fields[2]
            end -= len(raw) + 1
        data_end = start + len(head)
        pos = start


def _running_check(store: Store, cid: str) -> Callable[[], bool]:
    from kobako.runtime.containers import ContainerStore, is_running

    containers = ContainerStore(store)

    def running() -> bool:
        try:
            return is_running(containers.get(cid))
        except ContainerNotFound:
            return False

    return running


def _stamp_ns(stamp: bytes) -> int:
    """``YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`` as Unix nanoseconds; 0 if malformed."""
    try:
        text = stamp.decode("ascii")
        date = text[0:10]
        days = _DAY_CACHE.get(date)
        if days is None:
            days = _DAY_CACHE[date] = _days(int(text[0:4]), int(text[5:7]), int(text[8:10]))
        secs = days * 86_400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
        frac = text[20:-1] if text[19:20] == "." else ""
        return secs * 1_000_000_000 + int(frac[:9].ljust(9, "0"))
    except ValueError:
        return 0


_DAY_CACHE: dict[str, int] = {}


def _days(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Hinnant's
    ``days_from_civil``)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def parse_tail(value: str | int) -> int | None:
    """``--tail``: a number of lines, or None for all of them.

    As Docker's daemon does, ``all``, a negative number or anything that is not a number
    means all lines.
    """
    text = str(value).strip()
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or digits.strip(_DIGITS):
        return None
    lines = int(digits)
    return None if text[:1] == "-" and lines else lines


def parse_time(value: str, now: float | None = None) -> int | None:
    """``--since``/``--until`` as Docker reads them: Unix nanoseconds, or None for "not set".

    The value is a Go duration before ``now`` (``42s``, ``10m``, ``1h30m``), an RFC 3339
    time or a shorter form of one (``2026-12-07T16:45:33.25Z``, ``2026-12-07T16:45``,
    ``2026-12-07``: local time without a zone), or a Unix time (``1700000000.5``). ``""``
    and ``"0"`` are not set.

    Raises:
        InvalidArgument: It is none of these.
    """
    if value in ("", "0"):
        return None
    duration = _go_duration(value)
    if duration is not None:
        return (time.time_ns() if now is None else round(now * 1e9)) - duration
    try:
        return _rfc3339(value)
    except ValueError as e:
        if "-" in value:
            raise InvalidArgument(f'parsing time "{value}": {e}') from None
    secs, dot, frac = value.partition(".")
    if not secs or secs.strip(_DIGITS) or (dot and (not frac or frac.strip(_DIGITS))):
        raise InvalidArgument(f'failed to parse value as time or duration: "{value}"')
    return int(secs) * 1_000_000_000 + int(frac[:9].ljust(9, "0"))


def _go_duration(text: str) -> int | None:
    """Go's ``time.ParseDuration`` in nanoseconds; None if ``text`` is not a duration."""
    body = text[1:] if text[:1] in ("+", "-") else text
    negative = text[:1] == "-"
    if body == "0":
        return 0
    if not body:
        return None
    total = 0
    while body:
        i = 0
        while i < len(body) and body[i] in _DIGITS:
            i += 1
        whole, body = body[:i], body[i:]
        frac = ""
        if body[:1] == ".":
            i = 1
            while i < len(body) and body[i] in _DIGITS:
                i += 1
            frac, body = body[1:i], body[i:]
        if not whole and not frac:
            return None
        i = 0
        while i < len(body) and body[i] != "." and body[i] not in _DIGITS:
            i += 1
        scale = _UNITS.get(body[:i])
        if scale is None:
            return None
        body = body[i:]
        total += int(whole or 0) * scale + int(frac or 0) * scale // 10 ** len(frac)
    return -total if negative else total


def _two(text: str, what: str) -> int:
    if len(text) != 2 or text.strip(_DIGITS):
        raise ValueError(f"bad {what}")
    return int(text)


def _rfc3339(value: str) -> int:
    """Docker's time forms (``timetypes.GetTimestamp``) as Unix nanoseconds.

    ``YYYY-MM-DD[THH[:MM[:SS[.F]]]]`` followed by ``Z`` or ``±HH:MM``, or by nothing for the
    local time zone (its offset now, as Docker takes it).

    Raises:
        ValueError: It is not one of them.
    """
    import datetime

    local = not (any(c in value for c in "zZ+") or value.count("-") == 3)
    body = value
    if local:
        offset = time.localtime().tm_gmtoff
    elif value[-1:] in ("Z", "z"):
        body, offset = value[:-1], 0
    else:
        cut = max(value.rfind("+"), value.rfind("-"))
        if cut < 10:
            raise ValueError("bad time zone")
        hours, colon, minutes = value[cut + 1 :].partition(":")
        if not colon:
            raise ValueError("bad time zone")
        offset = _two(hours, "time zone") * 3600 + _two(minutes, "time zone") * 60
        offset = -offset if value[cut] == "-" else offset
        body = value[:cut]
    date, has_clock, clock = body.partition("T")
    year, month, day = (date[0:4], date[5:7], date[8:10])
    if len(date) != 10 or date[4] != "-" or date[7] != "-" or year.strip(_DIGITS):
        raise ValueError("bad date")
    fields = [int(year), _two(month, "month"), _two(day, "day"), 0, 0, 0]
    clock, dot, frac = clock.partition(".")
    parts = clock.split(":") if has_clock else []
    if has_clock and not 1 <= len(parts) <= 3:
        raise ValueError("bad time")
    for i, (part, what) in enumerate(zip(parts, ("hour", "minute", "second"), strict=False)):
        fields[3 + i] = _two(part, what)
    if (dot or "." in value) and (
        len(parts) != 3 or not 1 <= len(frac) <= 9 or frac.strip(_DIGITS)
    ):
        raise ValueError("bad fractional second")
    y, mo, d, h, mi, sec = fields
    datetime.datetime(y, mo, d, h, mi, sec)  # ValueError: out of range ("month must be...")
    secs = _days(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset
    return secs * 1_000_000_000 + int(frac.ljust(9, "0") if frac else 0)
