"""The parsing behind top, stats and port: ps output, cgroup I/O counters, sizes, port order."""

from __future__ import annotations

import pytest

from kobako.cli.observe import _binary_size, _memory_used, _natural
from kobako.errors import InvalidArgument, KobakoError
from kobako.runtime.cgroups import _io_v1, _io_v2
from kobako.runtime.observe import _check_ps_args, _parse_ps

PS_THREADS = """\
  PID   TID COMMAND
   10     - sh
    -    10 -
  900     - other
    -   900 -
   11     - sleep 100
    -    11 -
"""


def test_parse_ps_keeps_the_cgroup_rows_and_their_threads() -> None:
    listing = _parse_ps(PS_THREADS, {10, 11})
    assert listing["Titles"] == ["PID", "TID", "COMMAND"]
    assert listing["Processes"] == [
        ["10", "-", "sh"],
        ["-", "10", "-"],
        ["11", "-", "sleep 100"],
        ["-", "11", "-"],
    ]


def test_parse_ps_needs_a_pid_column() -> None:
    with pytest.raises(KobakoError, match="Couldn't find PID field"):
        _parse_ps("USER COMMAND\nroot sh\n", {1})


def test_ps_args_may_not_rename_a_column_pid() -> None:
    _check_ps_args("-o pid=PID,comm")
    with pytest.raises(InvalidArgument, match='specifying "user=PID" is not allowed'):
        _check_ps_args("-o user=PID")


def test_io_counters_v1_and_v2() -> None:
    v1 = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\n8:16 Read 1\nTotal 4609\n"
    assert _io_v1(v1) == ((8, 0, 4096, 512), (8, 16, 1, 0))
    v2 = "8:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n253:1 rbytes=7\n"
    assert _io_v2(v2) == ((8, 0, 4096, 512), (253, 1, 7, 0))
    assert _io_v1(None) == _io_v2("") == ()


def test_sizes_and_memory_as_docker_shows_them() -> None:
    assert [_binary_size(n) for n in (0, 1023, 64 << 20, 1536 * 1024, 3 << 30)] == [
        "0B",
        "1023B",
        "64MiB",
        "1.5MiB",
        "3GiB",
    ]
    assert _memory_used({"usage": 1000, "stats": {"total_inactive_file": 400}}) == 600
    assert _memory_used({"usage": 1000, "stats": {"inactive_file": 100}}) == 900
    assert _memory_used({"usage": 1000, "stats": {"inactive_file": 2000}}) == 1000
    assert _memory_used({}) == 0


def test_ports_sort_naturally() -> None:
    lines = ["80/tcp -> [::]:8080", "9/tcp -> 0.0.0.0:9", "80/tcp -> 0.0.0.0:8080", "443/udp"]
    assert sorted(lines, key=_natural) == [
        "9/tcp -> 0.0.0.0:9",
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> [::]:8080",
        "443/udp",
    ]
