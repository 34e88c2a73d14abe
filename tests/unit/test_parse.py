"""The docker-style value parsers: Docker's edge cases and messages, plus property tests."""

from __future__ import annotations

import math
import os
import re
import resource
import signal
from fractions import Fraction
from pathlib import Path
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import InvalidArgument, NotFound
from kobako.runtime import parse
from kobako.runtime.parse import (
    CAPABILITIES,
    DOCKER_DEFAULT_CAPS,
    RLIMIT_NUMBERS,
    ResolvedUser,
    capability_mask,
    check_cpus,
    parse_bytes,
    parse_capability,
    parse_cpus,
    parse_cpuset,
    parse_env,
    parse_memory_swap,
    parse_mount,
    parse_signal,
    parse_tmpfs,
    parse_ulimit,
    parse_user,
    parse_volume,
    resolve_user,
)
from kobako.runtime.spec import Mount, Rlimit

KI, MI, GI, TI, PI = (1 << (10 * n) for n in range(1, 6))
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev", "rprivate")

# Path segments without the characters the specs use as separators.
segment = st.text(st.sampled_from("abcxyz019_-. "), min_size=1, max_size=8).filter(
    lambda s: s.strip(".") != ""
)
abs_path = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
# --mount refuses blanks around a value.
mount_path = abs_path.filter(lambda path: path == path.strip())


def mixed_case(text: str) -> st.SearchStrategy[str]:
    """The same text with each letter in either case."""
    return st.tuples(*(st.sampled_from(sorted({c.lower(), c.upper()})) for c in text)).map("".join)


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512m", 512 * MI),
        ("512M", 512 * MI),
        ("1g", GI),
        ("1.5g", 1610612736),
        ("100k", 100 * KI),
        ("1024", 1024),
        ("512MiB", 512 * MI),
        ("512mb", 512 * MI),
        ("10 KB", 10 * KI),
        ("2 t", 2 * TI),
        ("1p", PI),
        ("7b", 7),
        ("0", 0),
        ("0.1k", 102),  # scaled in floating point, then truncated, as Docker does
        ("32.3", 32),
        ("0.3MB", 314572),
        (".5k", 512),
        ("1_000", 1000),  # Go's ParseFloat syntax
        ("1e3", 1000),
        ("0x1p10", 1024),
        (4096, 4096),
    ],
)
def test_bytes(value: str | int, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-1",
        "-1k",
        "abc",
        "m",
        "1x",
        "1kbb",
        "1bk",
        "1ki",
        "1kb ",
        "1  k",
        " 1",
        "1.2.3",
        "1e",
        "inf ",
        "nan ",
        "1e400",
        "_1",
        "1_",
        "1__0",
        "9223372036854775808",
        "8192p",
        -1,
    ],
)
def test_bad_bytes(value: str | int) -> None:
    with pytest.raises(InvalidArgument, match="invalid size") as caught:
        parse_bytes(value)
    assert repr(value) in str(caught.value)


UNITS = {"": 1, "b": 1} | {
    p + s: KI ** (i + 1) for i, p in enumerate("kmgtp") for s in ("", "b", "ib")
}


@given(
    st.integers(0, 1 << 40),
    st.sampled_from(sorted(UNITS)).flatmap(lambda u: st.tuples(st.just(u), mixed_case(u))),
    st.sampled_from(["", " "]),
)
def test_bytes_round_trip(number: int, unit: tuple[str, str], space: str) -> None:
    multiplier = UNITS[unit[0]]
    text = f"{number}{space if unit[1] else ''}{unit[1]}"
    if number * multiplier < 1 << 63:
        assert parse_bytes(text) == number * multiplier
    else:
        with pytest.raises(InvalidArgument, match="too large"):
            parse_bytes(text)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(["", "k", "m", "g"]))
def test_fractional_bytes_truncate(whole: int, fraction: int, unit: str) -> None:
    text = f"{whole}.{fraction}{unit}"
    exact = Fraction(f"{whole}.{fraction}") * UNITS[unit]
    assert abs(parse_bytes(text) - math.floor(exact)) <= 1  # Docker scales a float64


def test_memory_swap() -> None:
    assert parse_memory_swap("-1") == -1
    assert parse_memory_swap(-1) == -1
    assert parse_memory_swap("1g") == GI
    assert parse_memory_swap(0) == 0
    for bad in ("-2", "-1k", "unlimited", -2):
        with pytest.raises(InvalidArgument):
            parse_memory_swap(bad)


# --- CPUs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.5", 500_000_000),
        ("1.5", 1_500_000_000),
        ("2", 2_000_000_000),
        ("0.01", 10_000_000),
        ("0.000000001", 1),
        ("1.0000000000000", 1_000_000_000),
        ("1/2", 500_000_000),
        ("3/4", 750_000_000),
        ("1e-3", 1_000_000),
        ("2E1", 20_000_000_000),
        (".5", 500_000_000),
        ("5.", 5_000_000_000),
        ("+1", 1_000_000_000),
        ("0", 0),
        ("-0", 0),
        ("00.50", 500_000_000),
        (0.1, 100_000_000),
        (1e-05, 10_000),
        (2, 2_000_000_000),
    ],
)
def test_cpus(value: str | float, expected: int) -> None:
    assert parse_cpus(value) == expected


# Number syntax is parsed by hand (importing re costs the CLI milliseconds); it must accept
# exactly what these regular expressions do.
GO_DECIMAL = re.compile(r"[+-]?(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9_]+)?")
GO_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9_]+")
CPUS_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
CPUS_FRACTION = re.compile(r"([+-]?[0-9]+)/([0-9]+)")
number_text = st.text(
    st.sampled_from("0123456789_.eEpPxXaF+-/ \u0663"), max_size=12
) | st.sampled_from(
    ["0x1p-2", "0X.8P+1", "0x_1p1", "1e_5", "+.5e-3", "-0x1.fp3", "1.e5", ".e5", "+-1", "1/2/3"]
)


@given(number_text)
def test_go_float_syntax_is_the_regular_expressions(text: str) -> None:
    expected = float if GO_DECIMAL.fullmatch(text) else None
    if expected is None and GO_HEX.fullmatch(text):
        expected = float.fromhex
    assert parse._go_float_parser(text) == expected


@given(number_text)
def test_cpus_syntax_is_the_regular_expressions(text: str) -> None:
    decimal = CPUS_DECIMAL.fullmatch(text)
    expected = None
    if decimal and (decimal[2] or decimal[3]):
        expected = (decimal[1], decimal[2], decimal[3] or "", decimal[4])
    sign, unsigned = parse._unsigned(text)
    parts = parse._float_parts(unsigned, "0123456789", "e", "0123456789")
    assert (None if parts is None else (sign, *parts)) == expected
    fraction = CPUS_FRACTION.fullmatch(text)
    assert parse._fraction(text) == (fraction and (int(fraction[1]), int(fraction[2])))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "as a rational number"),
        ("", "as a rational number"),
        (".", "as a rational number"),
        (" 1", "as a rational number"),
        ("1 ", "as a rational number"),
        ("1/0", "as a rational number"),
        ("1/-2", "as a rational number"),
        ("0.5/2", "as a rational number"),
        (float("nan"), "as a rational number"),
        (float("inf"), "as a rational number"),
        ("0.0000000001", "too precise"),
        ("1/3", "too precise"),
        ("1e-999999999", "too precise"),
        ("-1", "negative"),
        ("-1/2", "negative"),
        ("1e10", "too large"),
        ("1e999999999", "too large"),
    ],
)
def test_bad_cpus(value: str | float, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as caught:
        parse_cpus(value)
    assert repr(value if isinstance(value, str) else repr(value)) in str(caught.value)


@given(st.integers(0, 10**12), st.booleans())
def test_cpus_round_trip(nano: int, strip: bool) -> None:
    text = f"{nano // 10**9}.{nano % 10**9:09d}"
    assert parse_cpus(text.rstrip("0") if strip else text) == nano


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_cpus_fraction(numerator: int, denominator: int) -> None:
    nano, rest = divmod(numerator * 10**9, denominator)
    if rest:
        with pytest.raises(InvalidArgument, match="too precise"):
            parse_cpus(f"{numerator}/{denominator}")
    else:
        assert parse_cpus(f"{numerator}/{denominator}") == nano


def test_check_cpus() -> None:
    check_cpus(0, ncpu=2)
    check_cpus(2_000_000_000, ncpu=2)
    for bad, shown in ((2_000_000_001, "2.000000001"), (-500_000_000, "-0.5"), (3 * 10**9, "3")):
        with pytest.raises(
            InvalidArgument,
            match=rf"^invalid cpus value {shown}: range of CPUs is from 0\.01 to 2\.00, "
            "as there are only 2 CPUs available$",
        ):
            check_cpus(bad, ncpu=2)
    check_cpus(10_000_000)  # 0.01 CPU fits whatever this machine has
    available = len(os.sched_getaffinity(0))
    with pytest.raises(InvalidArgument, match=f"there are only {available} CPUs available"):
        check_cpus(available * 10**9 + 1)


@pytest.mark.parametrize(
    "value", ["", "0", "0-2", "0-2,4", "0,0,1", "0-0,0,1-7", "03,1-3", "3,2,1"]
)
def test_cpuset(value: str) -> None:
    assert parse_cpuset(value) == value


@pytest.mark.parametrize(
    "value", ["a", "1-", "-1", "2-1", "1,,2", "1,", "1-2-3", " 1", "+1", "1.5"]
)
def test_bad_cpuset(value: str) -> None:
    with pytest.raises(InvalidArgument, match="for cpuset cpus") as caught:
        parse_cpuset(value)
    assert repr(value) in str(caught.value)


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 8), st.booleans()), min_size=1))
def test_cpuset_lists(items: list[tuple[int, int, bool]]) -> None:
    text = ",".join(
        f"{low}-{low + span}" if is_range else str(low) for low, span, is_range in items
    )
    assert parse_cpuset(text) == text


# --- users ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("", None)),
        ("1000", ("1000", None)),
        ("1000:1000", ("1000", "1000")),
        ("app:staff", ("app", "staff")),
        ("root:0", ("root", "0")),
        ("nobody", ("nobody", None)),
    ],
)
def test_user(value: str, expected: tuple[str, str | None]) -> None:
    assert parse_user(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (":", "neither empty"),
        ("app:", "neither empty"),
        (":staff", "neither empty"),
        ("a:b:c", "one colon"),
        ("-1", "uids and gids must be in range 0-2147483647"),
        ("2147483648", "uids and gids must be in range"),
        ("1:-5", "uids and gids must be in range"),
    ],
)
def test_bad_user(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as caught:
        parse_user(value)
    assert repr(value) in str(caught.value)


# A user or group name: never numeric, so never taken for an id.
name = st.builds(
    str.__add__, st.sampled_from("abcxyz_"), st.text(st.sampled_from("abcxyz019_-"), max_size=7)
)
ident = st.integers(0, (1 << 31) - 1)


@given(st.one_of(name, ident.map(str)), st.none() | st.one_of(name, ident.map(str)))
def test_user_round_trip(user: str, group: str | None) -> None:
    text = user if group is None else f"{user}:{group}"
    assert parse_user(text) == (user, group)


PASSWD = b"""root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
app:x:1000:1000::/home/app:/bin/sh
"""
GROUP = b"""root:x:0:
daemon:x:1:
wheel:x:10:root,app
staff:x:50:app
nogroup:x:65534:
app:x:1000:
"""


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (0, 0, (0, 10), "/root")),
        ("root", (0, 0, (0, 10), "/root")),
        ("0", (0, 0, (0, 10), "/root")),
        ("app", (1000, 1000, (1000, 10, 50), "/home/app")),
        ("1000", (1000, 1000, (1000, 10, 50), "/home/app")),
        ("+1000", (1000, 1000, (1000, 10, 50), "/home/app")),  # Go's Atoi takes a sign
        ("app:", (1000, 1000, (1000, 10, 50), "/home/app")),  # runc ignores an empty group
        ("app:staff", (1000, 50, (50,), "/home/app")),  # explicit group: no supplementary
        ("app:0", (1000, 0, (0,), "/home/app")),
        ("app:4242", (1000, 4242, (4242,), "/home/app")),
        ("nobody", (65534, 65534, (65534,), "/home")),
        ("4242", (4242, 0, (0,), "/")),
        ("4242:4242", (4242, 4242, (4242,), "/")),
        ("4242:staff", (4242, 50, (50,), "/")),
    ],
)
def test_resolve_user(user: str, expected: tuple[int, int, tuple[int, ...], str]) -> None:
    uid, gid, additional, home = expected
    assert resolve_user(user, PASSWD, GROUP) == ResolvedUser(
        uid=uid, gid=gid, additional_gids=additional, home=home
    )


def test_resolve_unknown_names() -> None:
    with pytest.raises(
        NotFound, match=r"^unable to find user nosuch: no matching entries in passwd file$"
    ):
        resolve_user("nosuch", PASSWD, GROUP)
    with pytest.raises(
        NotFound, match=r"^unable to find group nosuch: no matching entries in group file$"
    ):
        resolve_user("app:nosuch", PASSWD, GROUP)
    for bad in ("-1", "2147483648", "app:-1"):
        with pytest.raises(InvalidArgument, match="uids and gids must be in range"):
            resolve_user(bad, PASSWD, GROUP)


def test_resolve_without_files() -> None:
    assert resolve_user("", None, None) == ResolvedUser(uid=0, gid=0, additional_gids=(0,))
    assert resolve_user("1000", None, None) == ResolvedUser(
        uid=1000, gid=0, additional_gids=(0,), home="/"
    )
    assert resolve_user("app", PASSWD, None) == ResolvedUser(
        uid=1000, gid=1000, additional_gids=(1000,), home="/home/app"
    )
    assert resolve_user("app:50", PASSWD, None).gid == 50
    with pytest.raises(NotFound, match="unable to find user app"):
        resolve_user("app", None, GROUP)
    with pytest.raises(NotFound, match="unable to find group staff"):
        resolve_user("app:staff", PASSWD, None)


def test_resolve_file_quirks() -> None:
    passwd = (
        b"# comment:x:0:0::/comment:/bin/sh\n\n  \r\n"
        b"  root:x:0:0:root:/root:/bin/sh  \r\n"
        b"root:x:0:0:second:/second:/bin/sh\n"
        b"short:x:7\n"
        b"weird:x:abc:def::/weird:/bin/sh\n"
        b"caf\xc3\xa9:x:8:8::/caf\xc3\xa9:/bin/sh"  # no final newline
    )
    group = b"#wheel:x:10:root\nwheel:x:11:root,,short\nempty:x:12:\n"
    assert resolve_user("", passwd, group) == ResolvedUser(
        uid=0, gid=0, additional_gids=(0, 11), home="/root"
    )
    assert resolve_user("short", passwd, group) == ResolvedUser(
        uid=7, gid=0, additional_gids=(0, 11), home=""
    )
    assert resolve_user("weird", passwd, group) == ResolvedUser(
        uid=0, gid=0, additional_gids=(0,), home="/weird"
    )
    assert resolve_user("café", passwd, group).home == "/café"


users_strategy = st.lists(
    st.tuples(name, ident, ident, abs_path),
    min_size=1,
    max_size=6,
    unique_by=(lambda u: u[0], lambda u: u[1]),
)


@given(users_strategy, st.data())
def test_resolve_generated(users: list[tuple[str, int, int, str]], data: st.DataObject) -> None:
    names = [u[0] for u in users]
    groups = data.draw(
        st.lists(
            st.tuples(name, ident, st.lists(st.sampled_from(names), unique=True)),
            max_size=6,
            unique_by=(lambda g: g[0], lambda g: g[1]),
        )
    )
    passwd = "".join(f"{n}:x:{u}:{g}:gecos:{h}:/bin/sh\n" for n, u, g, h in users).encode()
    group = "".join(f"{n}:x:{g}:{','.join(m)}\n" for n, g, m in groups).encode()
    user_name, uid, gid, home = data.draw(st.sampled_from(users))
    supplementary = tuple(g for _, g, members in groups if user_name in members)
    expected = ResolvedUser(uid=uid, gid=gid, additional_gids=(gid, *supplementary), home=home)
    assert resolve_user(user_name, passwd, group) == expected
    assert resolve_user(str(uid), passwd, group) == expected
    by_name = [st.sampled_from([(n, g) for n, g, _ in groups])] if groups else []
    explicit, explicit_gid = data.draw(st.one_of(ident.map(lambda i: (str(i), i)), *by_name))
    assert resolve_user(f"{user_name}:{explicit}", passwd, group) == ResolvedUser(
        uid=uid, gid=explicit_gid, additional_gids=(explicit_gid,), home=home
    )


# --- environment ------------------------------------------------------------------------------


def test_env() -> None:
    host = {"B": "2", "EMPTY": ""}
    assert parse_env(["A=1", "B", "C=", "D=x=y", "UNSET", "EMPTY"], host) == (
        "A=1",
        "B=2",
        "C=",
        "D=x=y",
        "EMPTY=",
    )
    assert parse_env([], host) == ()
    for bad in ("=x", "", "="):
        with pytest.raises(InvalidArgument, match="invalid environment variable") as caught:
            parse_env(["A=1", bad], host)
        assert repr(bad) in str(caught.value)


@given(
    st.lists(
        st.tuples(st.text(min_size=1).filter(lambda k: "=" not in k), st.text(), st.booleans())
    )
)
def test_env_generated(items: list[tuple[str, str, bool]]) -> None:
    values = [key if from_host else f"{key}={value}" for key, value, from_host in items]
    host = {key: value for key, value, from_host in items if from_host}
    expected = tuple(
        f"{key}={host[key] if from_host else value}" for key, value, from_host in items
    )
    assert parse_env(values, host) == expected


# --- -v ---------------------------------------------------------------------------------------


def bind(source: str, target: str, *options: str) -> Mount:
    return Mount(destination=target, type="bind", source=source, options=options)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/tmp:/data", bind("/tmp", "/data", "rbind", "rw", "rprivate")),
        ("/tmp:/data:", bind("/tmp", "/data", "rbind", "rw", "rprivate")),
        ("/tmp:/data:ro", bind("/tmp", "/data", "rbind", "ro", "rprivate")),
        ("/tmp:/data:rw", bind("/tmp", "/data", "rbind", "rw", "rprivate")),
        ("/tmp:/data:Z", bind("/tmp", "/data", "rbind", "rw", "rprivate")),
        ("/tmp:/data:ro,Z,rslave", bind("/tmp", "/data", "rbind", "ro", "rslave")),
        ("/tmp:/data:shared,cached", bind("/tmp", "/data", "rbind", "rw", "shared")),
        ("/tmp:/data:ro-non-recursive", bind("/tmp", "/data", "rbind", "ro", "rprivate")),
        ("/tmp:/data:rro", bind("/tmp", "/data", "rbind", "rro", "ro", "rprivate")),
        ("/tmp:/d:ro-force-recursive", bind("/tmp", "/d", "rbind", "rro", "ro", "rprivate")),
        ("/a/../b//c/:/d/./e/", bind("/b/c", "/d/e", "rbind", "rw", "rprivate")),
        ("//x:/y", bind("/x", "/y", "rbind", "rw", "rprivate")),
        ("/with space:/x y", bind("/with space", "/x y", "rbind", "rw", "rprivate")),
        ("/rw:/ro", bind("/rw", "/ro", "rbind", "rw", "rprivate")),
    ],
)
def test_volume(value: str, expected: Mount) -> None:
    assert parse_volume(value) == expected


def test_volume_relative_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_volume("./x:/d").source == f"{tmp_path}/x"
    assert parse_volume(".:/d").source == str(tmp_path)
    assert parse_volume("../x:/d").source == f"{tmp_path.parent}/x"
    assert parse_volume(".hidden:/d").source == f"{tmp_path}/.hidden"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "invalid volume specification: ''$"),
        (":", "invalid volume specification: ':'$"),
        ("/tmp:", "invalid volume specification: '/tmp:'$"),
        (":/tmp", "invalid volume specification"),
        ("/path:rw", "invalid volume specification: '/path:rw'$"),
        ("/path:ro", "invalid volume specification"),
        ("/path:shared", "invalid volume specification"),
        ("/a:/b:c:d", "invalid volume specification"),
        ("/tmp:::", "invalid volume specification"),
        ("/tmp::ro", "field Target must not be empty"),
        ("/path:/path:sw", "invalid mode: 'sw'"),
        ("/path:/path:rwz", "invalid mode"),
        ("/path:/path:ro,rw", "invalid mode"),
        ("/path:/path:ro,rshared,rslave", "invalid mode"),
        ("/path:/path:ro,z,Z", "invalid mode"),
        ("/path:/path:ro,", "invalid mode"),
        ("/:../", "mount path must be absolute"),
        ("/:path", "'path' mount path must be absolute"),
        ("relative", "'relative' mount path must be absolute"),
        ("/tmp:/", "destination can't be '/'"),
        ("/tmp:/a/..", "destination can't be '/'"),
        ("/tmp:/x:nocopy", "field VolumeOptions must not be specified"),
        ("name:/x:nocopy,nocopy", "invalid mode"),
    ],
)
def test_bad_volume(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as caught:
        parse_volume(value)
    assert repr(value) in str(caught.value)


def volume(name: str, target: str, *options: str) -> Mount:
    return Mount(destination=target, type="volume", source=name, options=options)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cache:/data", volume("cache", "/data", "rbind", "rw", "rprivate")),
        ("cache:/data:ro", volume("cache", "/data", "rbind", "ro", "rprivate")),
        ("my-vol_1.x:/d/../e/", volume("my-vol_1.x", "/e", "rbind", "rw", "rprivate")),
        ("cache:/data:nocopy", volume("cache", "/data", "rbind", "rw", "rprivate", "nocopy")),
        ("cache:/d:ro,nocopy,Z", volume("cache", "/d", "rbind", "ro", "rprivate", "nocopy")),
        ("/scratch", volume("", "/scratch", "rbind", "rw", "rprivate")),
        ("/scratch/", volume("", "/scratch", "rbind", "rw", "rprivate")),
    ],
)
def test_volume_named_and_anonymous(value: str, expected: Mount) -> None:
    assert parse_volume(value) == expected


@pytest.mark.parametrize("name", ["~/x", "a", "-x", "_x", "x y", "é1", "a/b"])
def test_bad_volume_name(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_volume(f"{name}:/data")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f'create {name}: "{name}" includes invalid characters')
    assert 'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed' in message


@given(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", fullmatch=True), abs_path)
def test_volume_name_generated(name: str, target: str) -> None:
    m = parse_volume(f"{name}:{target}")
    assert (m.type, m.source, m.destination) == ("volume", name, target)


RW_MODES = {
    None: ("rw",),
    "rw": ("rw",),
    "ro": ("ro",),
    "ro-non-recursive": ("ro",),
    "ro-force-recursive": ("rro", "ro"),
    "rro": ("rro", "ro"),
}
PROPAGATIONS = ["private", "rprivate", "slave", "rslave", "shared", "rshared"]


@given(
    abs_path,
    abs_path,
    st.sampled_from(list(RW_MODES)),
    st.sampled_from([None, "z", "Z"]),
    st.sampled_from([None, *PROPAGATIONS]),
    st.sampled_from([None, "consistent", "cached", "delegated"]),
    st.randoms(use_true_random=False),
)
def test_volume_generated(
    source: str,
    target: str,
    rw: str | None,
    label: str | None,
    propagation: str | None,
    consistency: str | None,
    random: Random,
) -> None:
    words = [w for w in (rw, label, propagation, consistency) if w]
    random.shuffle(words)
    value = f"{source}:{target}" + (":" + ",".join(words) if words else "")
    assert parse_volume(value) == bind(
        source, target, "rbind", *RW_MODES[rw], propagation or "rprivate"
    )


# --- --mount ----------------------------------------------------------------------------------


def tmpfs(target: str, *options: str) -> Mount:
    return Mount(destination=target, type="tmpfs", source="tmpfs", options=options)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("type=bind,source=/tmp,target=/data", bind("/tmp", "/data", "rbind", "rw", "rprivate")),
        ("type=bind,src=/tmp,dst=/data,readonly", bind("/tmp", "/data", "rbind", "ro", "rprivate")),
        ("type=bind,src=/tmp,destination=/d,ro=1", bind("/tmp", "/d", "rbind", "ro", "rprivate")),
        ("type=bind,src=/tmp,dst=/d,readonly=false", bind("/tmp", "/d", "rbind", "rw", "rprivate")),
        ("TYPE=Bind,SRC=/tmp,Dst=/d", bind("/tmp", "/d", "rbind", "rw", "rprivate")),
        ("  type=bind,src=/tmp,dst=/d  ", bind("/tmp", "/d", "rbind", "rw", "rprivate")),
        ("type=bind,src=/tmp/,dst=/d/", bind("/tmp", "/d", "rbind", "rw", "rprivate")),
        (
            "type=bind,src=/tmp,dst=/d,bind-propagation=RShared",
            bind("/tmp", "/d", "rbind", "rw", "rshared"),
        ),
        (
            "type=bind,src=/tmp,dst=/d,bind-recursive=disabled",
            bind("/tmp", "/d", "bind", "rw", "rprivate"),
        ),
        (
            "type=bind,src=/tmp,dst=/d,bind-recursive=writable,readonly",
            bind("/tmp", "/d", "rbind", "ro", "rprivate"),
        ),
        (
            "type=bind,src=/tmp,dst=/d,bind-recursive=readonly,readonly,bind-propagation=rprivate",
            bind("/tmp", "/d", "rbind", "rro", "ro", "rprivate"),
        ),
        (
            "type=bind,src=/tmp,dst=/d,consistency=cached",
            bind("/tmp", "/d", "rbind", "rw", "rprivate"),
        ),
        ('"type=bind","src=/tmp","dst=/a,b"', bind("/tmp", "/a,b", "rbind", "rw", "rprivate")),
        ('type=bind,src=/tmp,"dst=/a""b"', bind("/tmp", '/a"b', "rbind", "rw", "rprivate")),
        (
            "type=bind,src=/nonexistent/kobako,dst=/d,bind-create-src",
            bind("/nonexistent/kobako", "/d", "rbind", "rw", "rprivate"),
        ),
        ("type=tmpfs,dst=/t", tmpfs("/t", *TMPFS_DEFAULTS)),
        ("type=tmpfs,dst=/t,readonly", tmpfs("/t", *TMPFS_DEFAULTS, "ro")),
        (
            "type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770",
            tmpfs("/t", *TMPFS_DEFAULTS, "mode=1770", "size=64m"),
        ),
        ("type=tmpfs,dst=/t,tmpfs-size=1000", tmpfs("/t", *TMPFS_DEFAULTS, "size=1000")),
        ("type=tmpfs,dst=/t,tmpfs-size=3072", tmpfs("/t", *TMPFS_DEFAULTS, "size=3k")),
        ("type=tmpfs,dst=/t,tmpfs-size=2g", tmpfs("/t", *TMPFS_DEFAULTS, "size=2g")),
        ("type=tmpfs,dst=/t,tmpfs-mode=0", tmpfs("/t", *TMPFS_DEFAULTS)),
        ("type=tmpfs,dst=/t,bind-recursive=enabled", tmpfs("/t", *TMPFS_DEFAULTS)),
    ],
)
def test_mount(value: str, expected: Mount) -> None:
    assert parse_mount(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("type=volume,src=vol,dst=/y", volume("vol", "/y", "rbind", "rw", "rprivate")),
        ("source=vol,target=/y", volume("vol", "/y", "rbind", "rw", "rprivate")),
        ("dst=/y", volume("", "/y", "rbind", "rw", "rprivate")),
        ("type=volume,src=vol,dst=/y,readonly", volume("vol", "/y", "rbind", "ro", "rprivate")),
        (
            "type=volume,src=vol,dst=/y,volume-nocopy",
            volume("vol", "/y", "rbind", "rw", "rprivate", "nocopy"),
        ),
        (
            "type=volume,src=vol,dst=/y,volume-nocopy=false,volume-driver=local",
            volume("vol", "/y", "rbind", "rw", "rprivate"),
        ),
    ],
)
def test_mount_volume(value: str, expected: Mount) -> None:
    assert parse_mount(value) == expected


def test_mount_relative_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_mount("type=bind,src=./data,dst=/d").source == f"{tmp_path}/data"
    assert parse_mount("type=bind,src=.,dst=/d").source == str(tmp_path)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "value is empty"),
        ("   ", "value is empty"),
        ("type=volume,src=x,dst=/y", "includes invalid characters"),
        ("type=volume,src=/abs,dst=/y", "includes invalid characters"),
        ("type=volume,src=vol,dst=/y,volume-driver=nfs", "volume driver 'nfs' not found"),
        ("type=volume,src=vol,dst=/y,volume-subpath=a", "volume-subpath is not supported yet"),
        ("type=volume,src=vol,dst=/y,volume-nocopy=maybe", "invalid boolean value"),
        ("type=volume,src=vol", "field Target must not be empty"),
        ("type=volume,src=vol,dst=/y,bind-propagation=shared", "cannot mix 'bind-\\*' options"),
        ("type=image,src=x,dst=/y", "image mounts are not supported yet"),
        ("type=npipe,src=/x,dst=/y", "mount type unknown"),
        ("type=bind,src=/tmp", "field Target must not be empty"),
        ("type=bind,dst=/x", "field Source must not be empty"),
        ("type=bind,src=relative,dst=/x", "'relative' mount path must be absolute"),
        ("type=bind,src=/nonexistent/kobako,dst=/x", "source path does not exist: /nonex"),
        ("type=bind,src=/tmp,dst=/", "destination can't be '/'"),
        ("type=bind,src=/tmp,dst=rel", "'rel' mount path must be absolute"),
        ("type=bind,src=/tmp,dst=/x,foo=bar", "unknown option 'foo' in 'foo=bar'"),
        ("type=bind,src=/tmp,dst=/x,foo", "invalid field 'foo' must be a key=value pair"),
        ("type=bind,src=/tmp,dst=/x,", "invalid field '' must be a key=value pair"),
        ("type=bind,src=/tmp,dst=/x,readonly=maybe", "invalid boolean value"),
        ("type=bind,src=/tmp,dst=/x,ro=yes", "invalid boolean value"),
        ("type=bind,src=/tmp,dst=/x,bind-propagation=weird", "invalid propagation mode: weird"),
        ("type=tmpfs,dst=/x,bind-propagation=shared", "cannot mix 'bind-\\*' options"),
        ("type=bind,src=/tmp,dst=/x,tmpfs-size=1m", "cannot mix 'tmpfs-\\*' options"),
        ("type=bind,src=/tmp,dst=/x,volume-nocopy", "cannot mix 'volume-\\*' options"),
        ("type=tmpfs,dst=/x,image-subpath=a", "cannot mix 'image-\\*' options"),
        ("type=tmpfs,src=/x,dst=/y", "field Source must not be specified"),
        ("type=tmpfs,dst=/x,tmpfs-size=abc", "invalid value for tmpfs-size: abc"),
        ("type=tmpfs,dst=/x,tmpfs-size=-1", "invalid value for tmpfs-size: -1"),
        ("type=tmpfs,dst=/x,tmpfs-mode=8", "invalid value for tmpfs-mode: 8"),
        ("type=tmpfs,dst=/x,tmpfs-mode=-1", "invalid value for tmpfs-mode"),
        ("type=tmpfs,dst=/x,tmpfs-mode=40000000000", "invalid value for tmpfs-mode"),
        ("type=bind, src=/tmp,dst=/x", "option should not have whitespace"),
        ("type=bind,src= /tmp,dst=/x", "value should not have whitespace"),
        ("type=bind,src=,dst=/x", "invalid value for 'src': value is empty"),
        ("type=bind,src=/tmp,dst=/x,bind-nonrecursive", "bind-nonrecursive is deprecated"),
        ("type=bind,src=/tmp,dst=/x,bind-recursive=weird", 'must be "enabled", "disabled"'),
        ("type=bind,src=/tmp,dst=/x,bind-recursive=writable", "requires 'readonly'"),
        ("type=bind,src=/tmp,dst=/x,bind-recursive=readonly", "requires 'readonly'"),
        ("type=bind,src=/tmp,dst=/x,bind-recursive=readonly,ro", "bind-propagation=rprivate"),
        ('type=bind,src="/tmp,dst=/x', 'bare " in non-quoted field'),
        ('"type=bind"x,src=/tmp,dst=/x', 'extraneous " in quoted field'),
        ('"type=bind,src=/tmp,dst=/x', "missing closing quote"),
    ],
)
def test_bad_mount(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        parse_mount(value)


EXISTING = ["/", "/tmp", "/usr", "/etc", "/proc", "/dev"]
READONLY_FIELDS = {
    None: False,
    "readonly": True,
    "ro": True,
    "readonly=true": True,
    "ro=1": True,
    "readonly=false": False,
    "ro=0": False,
}


@given(
    st.sampled_from(EXISTING),
    mount_path,
    st.sampled_from(["source", "src"]),
    st.sampled_from(["target", "dst", "destination"]),
    st.sampled_from(list(READONLY_FIELDS)),
    st.sampled_from([None, *PROPAGATIONS]),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_mount_bind_generated(
    source: str,
    target: str,
    source_key: str,
    target_key: str,
    readonly: str | None,
    propagation: str | None,
    nonrecursive: bool,
    random: Random,
) -> None:
    fields = ["type=bind", f"{source_key}={source}", f"{target_key}={target}"]
    fields += [readonly] if readonly else []
    fields += [f"bind-propagation={propagation}"] if propagation else []
    fields += ["bind-recursive=disabled"] if nonrecursive else []
    random.shuffle(fields)
    assert parse_mount(",".join(fields)) == bind(
        source,
        target,
        "bind" if nonrecursive else "rbind",
        "ro" if READONLY_FIELDS[readonly] else "rw",
        propagation or "rprivate",
    )


@given(
    mount_path,
    st.integers(0, 1 << 40),
    st.integers(0, 0o7777),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_mount_tmpfs_generated(
    target: str, size: int, mode: int, readonly: bool, random: Random
) -> None:
    fields = ["type=tmpfs", f"dst={target}", f"tmpfs-size={size}", f"tmpfs-mode={mode:o}"]
    fields += ["ro"] if readonly else []
    random.shuffle(fields)
    options = parse_mount(",".join(fields)).options
    assert options[:4] == TMPFS_DEFAULTS
    assert ("ro" in options) == readonly
    assert (f"mode={mode:o}" in options) == (mode != 0)
    sizes = [o for o in options if o.startswith("size=")]
    assert len(sizes) == (size != 0)
    if sizes:
        assert parse_bytes(sizes[0].removeprefix("size=")) == size


# --- --tmpfs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run", TMPFS_DEFAULTS),
        ("/run:", TMPFS_DEFAULTS),
        ("/run:defaults", TMPFS_DEFAULTS),
        (
            "/run:rw,size=64m,mode=1777,exec",
            ("nosuid", "nodev", "rprivate", "rw", "size=64m", "mode=1777", "exec"),
        ),
        ("/run:exec,noexec", ("nosuid", "nodev", "rprivate", "noexec")),
        ("/run:size=1m,size=2m", (*TMPFS_DEFAULTS, "size=2m")),
        ("/run:shared", ("noexec", "nosuid", "nodev", "shared")),
        (
            "/run:uid=1000,gid=1000,nr_inodes=10",
            (*TMPFS_DEFAULTS, "uid=1000", "gid=1000", "nr_inodes=10"),
        ),
        ("/run:suid,dev,noatime", ("noexec", "rprivate", "suid", "dev", "noatime")),
    ],
)
def test_tmpfs(value: str, expected: tuple[str, ...]) -> None:
    assert parse_tmpfs(value) == tmpfs("/run", *expected)


def test_tmpfs_cleans_destination() -> None:
    assert parse_tmpfs("/run//x/../y/").destination == "/run/y"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/", "destination can't be '/'"),
        ("/x/..:size=1m", "destination can't be '/'"),
        ("run", "'run' mount path must be absolute"),
        (":size=1m", "'' mount path must be absolute"),
        ("", "mount path must be absolute"),
        ("/run:foo", "invalid tmpfs option 'foo'"),
        ("/run:size", "invalid tmpfs option 'size'"),
        ("/run:rw,", "invalid tmpfs option ''"),
        ("/run:bogus=1", "invalid tmpfs option 'bogus=1'"),
    ],
)
def test_bad_tmpfs(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as caught:
        parse_tmpfs(value)
    assert repr(value) in str(caught.value)


FLAG_KINDS = [
    ("ro", "rw"),
    ("suid", "nosuid"),
    ("dev", "nodev"),
    ("exec", "noexec"),
    ("atime", "noatime"),
    ("private", "rprivate", "shared", "rshared", "slave", "rslave"),
]
DATA_KEYS = ["size", "mode", "uid", "gid", "nr_inodes"]


@given(
    st.lists(
        st.one_of(
            st.sampled_from([f for kind in FLAG_KINDS for f in kind]),
            st.tuples(st.sampled_from(DATA_KEYS), st.integers(0, 9999)).map(
                lambda kv: f"{kv[0]}={kv[1]}"
            ),
        ),
        max_size=12,
    )
)
def test_tmpfs_merge_keeps_the_last_of_each_kind(options: list[str]) -> None:
    def kind(option: str) -> str:
        return next((str(k) for k in FLAG_KINDS if option in k), option.partition("=")[0])

    given_options = [*TMPFS_DEFAULTS, *options]
    last = {kind(o): i for i, o in enumerate(given_options)}
    expected = tuple(given_options[i] for i in sorted(last.values()))
    value = "/t:" + ",".join(options) if options else "/t"
    assert parse_tmpfs(value).options == expected


# --- --ulimit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nofile=1024", Rlimit(type="nofile", soft=1024, hard=1024)),
        ("nofile=1024:2048", Rlimit(type="nofile", soft=1024, hard=2048)),
        ("core=-1", Rlimit(type="core", soft=-1, hard=-1)),
        ("core=0:-1", Rlimit(type="core", soft=0, hard=-1)),
        ("memlock=infinity", Rlimit(type="memlock", soft=-1, hard=-1)),
        ("nproc=+5", Rlimit(type="nproc", soft=5, hard=5)),
        ("rttime=0:0", Rlimit(type="rttime", soft=0, hard=0)),
    ],
)
def test_ulimit(value: str, expected: Rlimit) -> None:
    assert parse_ulimit(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nofile", "invalid ulimit argument: 'nofile'"),
        ("bogus=1", "invalid ulimit type: 'bogus'"),
        ("as=1", "invalid ulimit type: 'as'"),  # Docker disables it
        ("NOFILE=1", "invalid ulimit type: 'NOFILE'"),
        ("nofile=1:2:3", "too many limit value arguments - '1:2:3'"),
        ("nofile=abc", "invalid ulimit value 'abc'"),
        ("nofile=", "invalid ulimit value ''"),
        ("nofile=1:", "invalid ulimit value ''"),
        ("nofile=-2", "invalid ulimit value '-2'"),
        ("nofile=9223372036854775808", "invalid ulimit value"),
        ("nofile=2048:1024", "soft limit must be less than or equal to hard limit: soft: 2048"),
        ("nofile=-1:1024", r"soft: -1 \(unlimited\), hard: 1024"),
    ],
)
def test_bad_ulimit(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        parse_ulimit(value)


@given(
    st.sampled_from(sorted(RLIMIT_NUMBERS)),
    st.integers(0, (1 << 62)),
    st.none() | st.integers(-1, 1 << 62),
)
def test_ulimit_round_trip(limit: str, soft: int, hard: int | None) -> None:
    text = f"{limit}={soft}" if hard is None else f"{limit}={soft}:{hard}"
    if hard is not None and hard != -1 and soft > hard:
        with pytest.raises(InvalidArgument, match="soft limit"):
            parse_ulimit(text)
    else:
        assert parse_ulimit(text) == Rlimit(
            type=limit, soft=soft, hard=soft if hard is None else hard
        )


def test_rlimit_numbers_match_the_kernel() -> None:
    assert len(RLIMIT_NUMBERS) == 15
    for limit, number in RLIMIT_NUMBERS.items():
        constant = getattr(resource, f"RLIMIT_{limit.upper()}", None)
        assert constant in (None, number), limit


# --- capabilities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("net_admin", "CAP_NET_ADMIN"),
        ("NET_ADMIN", "CAP_NET_ADMIN"),
        ("CAP_NET_ADMIN", "CAP_NET_ADMIN"),
        ("cap_sys_admin", "CAP_SYS_ADMIN"),
        (" kill ", "CAP_KILL"),
        ("all", "ALL"),
        ("ALL", "ALL"),
        ("checkpoint_restore", "CAP_CHECKPOINT_RESTORE"),
    ],
)
def test_capability(value: str, expected: str) -> None:
    assert parse_capability(value) == expected


@pytest.mark.parametrize("value", ["bogus", "", "CAP_", "cap_all", "NET ADMIN"])
def test_bad_capability(value: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown capability"):
        parse_capability(value)


def test_capability_tables() -> None:
    assert sorted(CAPABILITIES.values()) == list(range(41))
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(set(DOCKER_DEFAULT_CAPS)) == 14
    assert capability_mask(DOCKER_DEFAULT_CAPS) == 0xA80425FB
    assert capability_mask(["all"]) == (1 << 41) - 1
    assert capability_mask([]) == 0
    assert capability_mask(["kill", "CAP_KILL"]) == 1 << 5
    with pytest.raises(InvalidArgument):
        capability_mask(["chown", "bogus"])


@given(
    st.sampled_from(sorted(CAPABILITIES)).flatmap(lambda c: st.tuples(st.just(c), st.booleans()))
)
def test_capability_spellings(item: tuple[str, bool]) -> None:
    capability, prefixed = item
    text = capability if prefixed else capability.removeprefix("CAP_")
    assert parse_capability(text.lower()) == capability
    assert parse_capability(text) == capability


# --- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SIGTERM", 15),
        ("TERM", 15),
        ("term", 15),
        ("sigkill", 9),
        ("15", 15),
        (15, 15),
        ("SIGCLD", int(signal.SIGCHLD)),
        ("RTMIN", signal.SIGRTMIN),
        ("RTMIN+1", signal.SIGRTMIN + 1),
        ("sigrtmin+15", signal.SIGRTMIN + 15),
        ("RTMAX-14", signal.SIGRTMAX - 14),
        ("RTMAX", signal.SIGRTMAX),
        ("64", 64),
    ],
)
def test_signal(value: str | int, expected: int) -> None:
    assert parse_signal(value) == expected


@pytest.mark.parametrize(
    "value", ["0", 0, "65", 65, -1, "-1", "+15", "SIGFOO", "", "RTMIN+16", "SIGSIGTERM"]
)
def test_bad_signal(value: str | int) -> None:
    with pytest.raises(InvalidArgument, match="invalid signal") as caught:
        parse_signal(value)
    assert repr(value) in str(caught.value)


@given(st.sampled_from(sorted(signal.Signals.__members__)), st.booleans(), st.booleans())
def test_signal_names(member: str, prefixed: bool, lower: bool) -> None:
    text = member if prefixed else member.removeprefix("SIG")
    text = text.lower() if lower else text
    assert parse_signal(text) == signal.Signals[member]
