"""Evaluating Docker seccomp profiles as moby does, and caching what they compile to."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import InvalidArgument, KobakoError
from kobako.runtime import seccomp

HAS_NATIVE = importlib.util.find_spec("kobako._native") is not None
needs_native = pytest.mark.skipif(not HAS_NATIVE, reason="kobako._native is not built")

AMD64 = {"arch": "amd64", "seccomp_arch": "SCMP_ARCH_X86_64", "kernel": (6, 8)}
DEFAULT_CAPS = frozenset({"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"})


def default_profile() -> Any:
    return seccomp.load(None)[1]


def evaluate(profile: Any, caps: frozenset[str] = DEFAULT_CAPS, **host: Any) -> seccomp.Evaluated:
    result = seccomp.evaluate(profile, caps, **{**AMD64, **host})
    assert result is not None
    return result


def actions(ev: seccomp.Evaluated, name: str) -> list[tuple[str, int | None, list[Any]]]:
    """Every (action, errno, conditions) the evaluated profile has for ``name``."""
    return [(action, errno, args) for names, action, errno, args in ev.rules if name in names]


def unconditional_allow(ev: seccomp.Evaluated, name: str) -> bool:
    return ("SCMP_ACT_ALLOW", None, []) in actions(ev, name)


# --- the default profile -------------------------------------------------------------------


def test_default_profile_is_mobys() -> None:
    data, profile = seccomp.load(None)
    assert data.startswith(b'{\n\t"defaultAction": "SCMP_ACT_ERRNO"')
    assert profile["defaultErrnoRet"] == 1
    ev = evaluate(profile)
    assert (ev.default_action, ev.default_errno) == ("SCMP_ACT_ERRNO", 1)
    assert unconditional_allow(ev, "read")
    assert unconditional_allow(ev, "execve")


def test_mount_needs_cap_sys_admin() -> None:
    without = evaluate(default_profile())
    with_admin = evaluate(default_profile(), DEFAULT_CAPS | {"CAP_SYS_ADMIN"})
    for name in ("mount", "umount2", "unshare", "setns", "bpf"):
        assert actions(without, name) == []
        assert unconditional_allow(with_admin, name)


def test_clone_without_cap_sys_admin_cannot_make_namespaces() -> None:
    ev = evaluate(default_profile())
    assert actions(ev, "clone") == [
        ("SCMP_ACT_ALLOW", None, [(0, "SCMP_CMP_MASKED_EQ", 0x7E020000, 0)])
    ]
    assert actions(ev, "clone3") == [("SCMP_ACT_ERRNO", 38, [])]
    admin = evaluate(default_profile(), DEFAULT_CAPS | {"CAP_SYS_ADMIN"})
    assert actions(admin, "clone") == [("SCMP_ACT_ALLOW", None, [])]
    assert actions(admin, "clone3") == [("SCMP_ACT_ALLOW", None, [])]


def test_s390x_checks_the_second_clone_argument() -> None:
    ev = evaluate(default_profile(), arch="s390x", seccomp_arch="SCMP_ARCH_S390X")
    assert actions(ev, "clone") == [
        ("SCMP_ACT_ALLOW", None, [(1, "SCMP_CMP_MASKED_EQ", 0x7E020000, 0)])
    ]
    assert ev.arches == ("SCMP_ARCH_S390X", "SCMP_ARCH_S390")


def test_arch_map_and_arch_specific_rules() -> None:
    amd64 = evaluate(default_profile())
    assert amd64.arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert unconditional_allow(amd64, "arch_prctl")
    assert not actions(amd64, "set_tls")

    arm64 = evaluate(default_profile(), arch="arm64", seccomp_arch="SCMP_ARCH_AARCH64")
    assert arm64.arches == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert unconditional_allow(arm64, "set_tls")
    assert not actions(arm64, "arch_prctl")

    riscv = evaluate(default_profile(), arch="riscv64", seccomp_arch="SCMP_ARCH_RISCV64")
    assert riscv.arches == ("SCMP_ARCH_RISCV64",)
    assert unconditional_allow(riscv, "riscv_flush_icache")

    unknown = evaluate(default_profile(), arch="", seccomp_arch="")
    assert unknown.arches == ()
    assert not actions(unknown, "arch_prctl")


def test_ptrace_needs_kernel_4_8_or_cap_sys_ptrace() -> None:
    assert not actions(evaluate(default_profile(), kernel=(4, 7)), "ptrace")
    assert unconditional_allow(evaluate(default_profile(), kernel=(4, 8)), "ptrace")
    assert unconditional_allow(evaluate(default_profile(), kernel=(5, 0)), "ptrace")
    ptrace = DEFAULT_CAPS | {"CAP_SYS_PTRACE"}
    assert unconditional_allow(evaluate(default_profile(), ptrace, kernel=(4, 7)), "ptrace")


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", ("amd64", "SCMP_ARCH_X86_64")),
        ("aarch64", ("arm64", "SCMP_ARCH_AARCH64")),
        ("armv7l", ("arm", "SCMP_ARCH_ARM")),
        ("armv6l", ("arm", "SCMP_ARCH_ARM")),
        ("s390x", ("s390x", "SCMP_ARCH_S390X")),
        ("sparc64", ("", "")),
    ],
)
def test_native_arch(machine: str, expected: tuple[str, str]) -> None:
    assert seccomp.native_arch(machine) == expected


@pytest.mark.parametrize(
    ("release", "version"),
    [
        ("6.8.0-45-generic", (6, 8)),
        ("3.12-1-amd64", (3, 12)),
        ("4.19.0", (4, 19)),
        ("5.4rc1", (5, 4)),
    ],
)
def test_kernel_release(release: str, version: tuple[int, int]) -> None:
    assert seccomp._kernel(release) == version


def test_unparsable_kernel_release() -> None:
    with pytest.raises(KobakoError, match="cannot parse the kernel release"):
        seccomp._kernel("linux")


# --- the schema ----------------------------------------------------------------------------


def profile_with(*rules: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": list(rules), **top}


def test_excludes_min_kernel() -> None:
    rule = {"names": ["old"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}}
    assert actions(evaluate(profile_with(rule), kernel=(5, 9)), "old")
    assert not actions(evaluate(profile_with(rule), kernel=(5, 10)), "old")


def test_includes_needs_every_cap_excludes_any() -> None:
    both = {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_X", "CAP_Y"]}}
    either = {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_X", "CAP_Y"]}}
    ev = evaluate(profile_with(both, either), frozenset({"CAP_X"}))
    assert not actions(ev, "a")
    assert not actions(ev, "b")
    ev = evaluate(profile_with(both, either), frozenset({"CAP_X", "CAP_Y"}))
    assert actions(ev, "a")
    ev = evaluate(profile_with(both, either), frozenset())
    assert actions(ev, "b")


def test_name_errno_args_and_architectures() -> None:
    profile = profile_with(
        {"name": "kill", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {
            "names": ["prctl"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_GE"},
                {"index": 0, "value": 9, "op": "SCMP_CMP_LE"},
            ],
        },
        {"names": [], "action": "SCMP_ACT_ALLOW"},
        architectures=["SCMP_ARCH_X86"],
        defaultErrnoRet=None,
    )
    ev = evaluate(profile)
    assert ev.arches == ("SCMP_ARCH_X86",)
    assert ev.default_errno is None
    assert ev.rules == (
        (["kill"], "SCMP_ACT_ERRNO", 13, []),
        (["prctl"], "SCMP_ACT_ALLOW", None, [(0, "SCMP_CMP_GE", 1, 0), (0, "SCMP_CMP_LE", 9, 0)]),
    )


def test_an_empty_profile_disables_seccomp() -> None:
    assert seccomp.evaluate({}, DEFAULT_CAPS, **AMD64) is None
    assert seccomp.evaluate({"syscalls": None}, DEFAULT_CAPS, **AMD64) is None


@pytest.mark.parametrize(
    ("profile", "problem"),
    [
        ([], "the profile must be an object"),
        ({"defaultAction": "SCMP_ACT_BOGUS"}, "unknown action 'SCMP_ACT_BOGUS'"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported"),
        ({"defaultAction": 1}, "defaultAction must be a string"),
        (profile_with(defaultErrnoRet=-1), "defaultErrnoRet must be an integer"),
        (profile_with(architectures=["x86"]), "unknown architecture 'x86'"),
        (
            profile_with(
                architectures=["SCMP_ARCH_X86"], archMap=[{"architecture": "SCMP_ARCH_X86"}]
            ),
            "'architectures' and 'archMap' were both given",
        ),
        (profile_with(syscalls=[1]), "syscalls[0] must be an object"),
        (
            profile_with({"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}),
            "'name' and 'names'",
        ),
        (profile_with({"names": ["a"]}), "syscalls[0].action: unknown action ''"),
        (
            profile_with({"names": "read", "action": "SCMP_ACT_ALLOW"}),
            "syscalls[0].names must be a list",
        ),
        (
            profile_with(
                {
                    "names": ["a"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 6, "op": "SCMP_CMP_EQ"}],
                }
            ),
            "syscalls[0].args[0].index must be an integer from 0 to 5",
        ),
        (
            profile_with(
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "op": "EQ"}]}
            ),
            "syscalls[0].args[0].op: unknown operator 'EQ'",
        ),
        (
            profile_with(
                {
                    "names": ["a"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 2**64}],
                }
            ),
            "syscalls[0].args[0].value must be an integer",
        ),
        (
            profile_with(
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}
            ),
            "invalid kernel version '4'",
        ),
        (
            profile_with(
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "0.0"}}
            ),
            "invalid kernel version '0.0'",
        ),
        (
            profile_with(
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": 4.8}}
            ),
            "syscalls[0].excludes.minKernel must be a string",
        ),
        (
            profile_with(
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": "CAP_X"}}
            ),
            "syscalls[0].includes.caps must be a list",
        ),
    ],
)
def test_bad_profiles(profile: Any, problem: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        seccomp.evaluate(profile, DEFAULT_CAPS, source="p.json", **AMD64)
    message = str(info.value)
    assert message.startswith("p.json: ")
    assert problem in message


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": ')
    with pytest.raises(InvalidArgument, match=r"bad\.json: invalid JSON"):
        seccomp.load(str(bad))
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidArgument, match=r"missing\.json: No such file"):
        seccomp.load(str(missing))


_scalar = st.sampled_from(
    [None, True, -1, 0, 5, 2**64, "", "4.8", "SCMP_ACT_ALLOW", "SCMP_CMP_EQ", "amd64", "CAP_X"]
)
_json = (
    _scalar | st.lists(_scalar, max_size=3) | st.dictionaries(st.text("abx", max_size=2), _scalar)
)
_arg = st.dictionaries(st.sampled_from(["index", "op", "value", "valueTwo"]), _scalar, max_size=4)
_filter = st.dictionaries(st.sampled_from(["caps", "arches", "minKernel"]), _json, max_size=3)
_rule = st.fixed_dictionaries(
    {},
    optional={
        "names": _json | st.just(["read"]),
        "name": _json,
        "action": _json,
        "errnoRet": _json,
        "args": _json | st.lists(_arg, max_size=2),
        "includes": _json | _filter,
        "excludes": _json | _filter,
    },
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "defaultAction": _json,
            "defaultErrnoRet": _json,
            "architectures": _json,
            "archMap": _json
            | st.lists(st.dictionaries(st.just("architecture"), _json), max_size=2),
            "syscalls": _json | st.lists(_rule, max_size=3),
        },
    )
)
def test_any_json_is_evaluated_or_refused_cleanly(profile: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidArgument):
        seccomp.evaluate(profile, DEFAULT_CAPS, **AMD64)


@given(st.integers(0, 255), st.integers(0, 255))
def test_min_kernel_versions(kernel: int, major: int) -> None:
    rule = {
        "names": ["a"],
        "action": "SCMP_ACT_ALLOW",
        "includes": {"minKernel": f"{kernel}.{major}"},
    }
    if (kernel, major) == (0, 0):
        with pytest.raises(InvalidArgument):
            evaluate(profile_with(rule))
        return
    kept = bool(actions(evaluate(profile_with(rule), kernel=(5, 4)), "a"))
    assert kept == ((kernel, major) <= (5, 4))


# --- the cache -----------------------------------------------------------------------------


def test_cache_round_trip_and_corruption(tmp_path: Path) -> None:
    key = seccomp._cache_key(b"{}", DEFAULT_CAPS, "amd64", "6.8.0")
    path = seccomp._cache_file(str(tmp_path / "cache"), key)
    program = bytes(range(16))
    seccomp._write_cached(path, key, program)
    assert seccomp._read_cached(path, key) == program
    assert [p for p in os.listdir(tmp_path / "cache") if p.startswith(".")] == []

    # A file written for another key (sharing the name) is a miss, not a wrong program.
    other = seccomp._cache_key(b"{ }", DEFAULT_CAPS, "amd64", "6.8.0")
    assert seccomp._read_cached(path, other) is None

    blob = Path(path).read_bytes()
    for corrupt in (blob[:-8], blob[:-1] + b"\xff", b"", b"junk" + blob, blob[:-16]):
        Path(path).write_bytes(corrupt)
        assert seccomp._read_cached(path, key) is None
    assert seccomp._read_cached(str(tmp_path / "absent.bpf"), key) is None


def test_cache_key_covers_every_input() -> None:
    key = seccomp._cache_key(b"{}", frozenset({"CAP_A", "CAP_B"}), "amd64", "6.8.0")
    assert key == seccomp._cache_key(b"{}", frozenset({"CAP_B", "CAP_A"}), "amd64", "6.8.0")
    others = {
        seccomp._cache_key(b"{ }", frozenset({"CAP_A", "CAP_B"}), "amd64", "6.8.0"),
        seccomp._cache_key(b"{}", frozenset({"CAP_A"}), "amd64", "6.8.0"),
        seccomp._cache_key(b"{}", frozenset({"CAP_A", "CAP_B"}), "arm64", "6.8.0"),
        seccomp._cache_key(b"{}", frozenset({"CAP_A", "CAP_B"}), "amd64", "6.9.0"),
    }
    assert key not in others
    assert len(others) == 4


# --- compiling (needs the native module) ---------------------------------------------------


@needs_native
def test_compile_default_profile_and_cache_it(tmp_path: Path) -> None:
    seccomp._memory.clear()
    bpf = seccomp.compile_profile(None, DEFAULT_CAPS, cache_dir=str(tmp_path))
    assert bpf and len(bpf) % 8 == 0
    (cached,) = tmp_path.iterdir()
    data = seccomp.load(None)[0]
    key = seccomp._cache_key(data, DEFAULT_CAPS, seccomp.native_arch()[0], os.uname().release)
    assert seccomp._read_cached(str(cached), key) == bpf

    # A corrupt cache file is ignored and rewritten.
    seccomp._memory.clear()
    cached.write_bytes(b"garbage")
    assert seccomp.compile_profile(None, DEFAULT_CAPS, cache_dir=str(tmp_path)) == bpf
    assert seccomp._read_cached(str(cached), key) == bpf

    # A cached program is taken as it is, without compiling the profile again.
    seccomp._memory.clear()
    seccomp._write_cached(str(cached), key, bytes(8))
    assert seccomp.compile_profile(None, DEFAULT_CAPS, cache_dir=str(tmp_path)) == bytes(8)

    admin = seccomp.compile_profile(None, DEFAULT_CAPS | {"CAP_SYS_ADMIN"}, cache_dir=None)
    assert admin and admin != bpf


@needs_native
def test_compile_user_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(profile_with({"names": ["read", "no_such_call"], "action": "SCMP_ACT_ALLOW"}))
    )
    bpf = seccomp.compile_profile(str(path), DEFAULT_CAPS, cache_dir=None)
    assert bpf and len(bpf) % 8 == 0
    path.write_text("{}")
    assert seccomp.compile_profile(str(path), DEFAULT_CAPS, cache_dir=None) is None
