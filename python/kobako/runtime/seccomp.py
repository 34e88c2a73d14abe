"""Docker's seccomp profiles: load one, evaluate it for this host, compile it to BPF.

A profile is the JSON Docker takes with ``--security-opt seccomp=PROFILE.json``; without one,
Docker's own default (``kobako/data/seccomp-default.json``, moby's
``profiles/seccomp/default.json``) applies. :func:`evaluate` resolves it for a host exactly as
moby's ``profiles/seccomp/seccomp_linux.go`` does: a rule is kept or dropped by its
``includes``/``excludes`` (capabilities in the container's bounding set, the host's
architecture, the kernel version), and ``archMap`` picks the host's architecture with its
sub-architectures. The native core then compiles the result with libseccomp, as runc does.

Compiling the default profile takes tens of milliseconds, so :func:`compile_profile` keeps
the programs it made in memory and, given a ``cache_dir``, on disk for the next CLI run; a
cache hit reads the profile's bytes but neither parses nor evaluates it.

Example::

    bpf = compile_profile(None, frozenset({"CAP_CHOWN", "CAP_KILL"}), cache_dir=None)
"""

from __future__ import annotations

import os

from kobako import __version__
from kobako._record import Record
from kobako.errors import InvalidArgument, KobakoError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

__all__ = ["ArgCond", "Evaluated", "Rule", "compile_profile", "evaluate", "load", "native_arch"]

#: One argument condition as the native compiler takes it: (index, op, value, value_two).
ArgCond = tuple[int, str, int, int]
#: One rule as the native compiler takes it: (names, action, errno, conditions).
Rule = tuple[list[str], str, int | None, list[ArgCond]]

#: Actions libseccomp and runc know (SCMP_ACT_NOTIFY needs an agent kobako does not have).
_ACTIONS = frozenset(
    {
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    }
)
_OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)
#: ``os.uname().machine`` -> the name profiles use in ``includes``/``excludes`` ``arches``
#: (libseccomp's, as moby's ``goToNative`` has them) and the ``SCMP_ARCH_*`` it selects in
#: ``archMap`` (moby's ``nativeToSeccomp``).
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv8l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "loongarch64": ("loong64", "SCMP_ARCH_LOONGARCH64"),
}
_DEFAULT = "seccomp-default.json"
# Read with open(), not importlib.resources (milliseconds to import): a package with a native
# module is never imported from a zip file.
_DEFAULT_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", _DEFAULT)
_U64 = (1 << 64) - 1
#: Bump when the compiled form changes, so that old on-disk programs are not reused.
_CACHE_FORMAT = b"kobako-seccomp-2"
_CACHE_MAGIC = b"KSECCOMP2\n"
_memory: dict[bytes, bytes] = {}


class Evaluated(Record):
    """A profile resolved for one host and capability set: what the native compiler takes.

    Attributes:
        default_action: The action for system calls no rule names (``SCMP_ACT_*``).
        default_errno: The errno of an ``SCMP_ACT_ERRNO`` default (None: EPERM).
        arches: Extra ``SCMP_ARCH_*`` architectures besides the native one.
        rules: The rules kept, in profile order.
    """

    default_action: str
    default_errno: int | None
    arches: tuple[str, ...]
    rules: tuple[Rule, ...]


def native_arch(machine: str | None = None) -> tuple[str, str]:
    """The host's architecture as profiles name it: ``("amd64", "SCMP_ARCH_X86_64")``.

    Args:
        machine: ``uname -m``; the running host's by default.

    Returns:
        The name used in ``includes``/``excludes`` and the ``SCMP_ARCH_*`` of ``archMap``;
        ``("", "")`` for a machine moby does not map (its arch-specific rules then never apply).
    """
    machine = os.uname().machine if machine is None else machine
    if machine.startswith("arm") and machine not in _MACHINES:
        machine = "armv7l"  # armv6l, armv7hl, ...: all 32-bit ARM
    return _MACHINES.get(machine, ("", ""))


def _kernel(release: str) -> tuple[int, int]:
    """``"6.8.0-45-generic"`` -> ``(6, 8)``, as moby's ``parseRelease`` reads it."""
    kernel, _, rest = release.partition(".")
    major = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    if not (kernel.isdigit() and major):
        raise KobakoError(f"cannot parse the kernel release {release!r}")
    return int(kernel), int(major)


def load(path: str | None) -> tuple[bytes, Any]:
    """Read a profile: Docker's default, or the JSON file at ``path``.

    Args:
        path: A profile JSON file, or None for Docker's default profile.

    Returns:
        The file's bytes (the cache key) and its parsed JSON.

    Raises:
        InvalidArgument: The file cannot be read or is not JSON.
    """
    data = _read(path)
    return data, _parse(data, path)


def _read(path: str | None) -> bytes:
    if path is None:
        with open(_DEFAULT_PATH, "rb") as f:
            return f.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(f"seccomp profile {path}: {e.strerror or e}") from None


def _parse(data: bytes, path: str | None) -> Any:
    import json

    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"seccomp profile {path or _DEFAULT}: invalid JSON: {e}") from None


class _Bad(Exception):
    """A schema error, raised as InvalidArgument with the file's name by :func:`evaluate`."""


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Bad(f"{where} must be a list")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(s, str) for s in items):
        raise _Bad(f"{where} must be a list of strings")
    return list(items)


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{where} must be a string")
    return value


def _uint(value: Any, where: str, limit: int = _U64) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _Bad(f"{where} must be an integer from 0 to {limit}, not {value!r}")
    return value


def _min_kernel(value: Any, where: str) -> tuple[int, int] | None:
    """moby's ``KernelVersion.UnmarshalJSON``: ``"<kernel>.<major>"``, each 0..255, not 0.0."""
    text = _string(value, where)
    if not text:
        return None
    parts = text.split(".", 2)
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise _Bad(f'{where}: invalid kernel version {text!r}, expected "<kernel>.<major>"')
    version = (int(parts[0]), int(parts[1]))
    if max(version) > 255 or version == (0, 0):
        raise _Bad(f"{where}: invalid kernel version {text!r}")
    return version


class _Host(Record):
    caps: frozenset[str]
    arch: str
    kernel: tuple[int, int]


def _filter(value: Any, where: str) -> tuple[list[str], list[str], tuple[int, int] | None] | None:
    """An ``includes``/``excludes`` object: (arches, caps, minKernel); None if absent."""
    if value is None:
        return None
    f = _object(value, where)
    return (
        _strings(f.get("arches"), f"{where}.arches"),
        _strings(f.get("caps"), f"{where}.caps"),
        _min_kernel(f.get("minKernel"), f"{where}.minKernel"),
    )


def _keep(rule: Mapping[str, Any], host: _Host, where: str) -> bool:
    """moby's ``setupSeccomp`` loop: excludes first, then includes, each field if present."""
    excludes = _filter(rule.get("excludes"), f"{where}.excludes")
    includes = _filter(rule.get("includes"), f"{where}.includes")
    if excludes is not None:
        arches, caps, kernel = excludes
        if host.arch in arches or any(c in host.caps for c in caps):
            return False
        if kernel is not None and host.kernel >= kernel:
            return False
    if includes is not None:
        arches, caps, kernel = includes
        if arches and host.arch not in arches:
            return False
        if not all(c in host.caps for c in caps):
            return False
        if kernel is not None and host.kernel < kernel:
            return False
    return True


def _rule(rule: Mapping[str, Any], where: str) -> Rule:
    name = _string(rule.get("name"), f"{where}.name")
    names = _strings(rule.get("names"), f"{where}.names")
    if name and names:
        raise _Bad(f"{where}: 'name' and 'names' were both given, use either 'name' or 'names'")
    action = _string(rule.get("action"), f"{where}.action")
    _check_action(action, f"{where}.action")
    errno = _uint(rule.get("errnoRet"), f"{where}.errnoRet", 0xFFFF)
    args: list[ArgCond] = []
    for j, arg in enumerate(_list(rule.get("args"), f"{where}.args")):
        at = f"{where}.args[{j}]"
        a = _object(arg, at)
        index = _uint(a.get("index"), f"{at}.index", 5)
        op = _string(a.get("op"), f"{at}.op")
        if op not in _OPERATORS:
            raise _Bad(f"{at}.op: unknown operator {op!r}")
        value = _uint(a.get("value"), f"{at}.value") or 0
        value_two = _uint(a.get("valueTwo"), f"{at}.valueTwo") or 0
        args.append((index or 0, op, value, value_two))
    return [name] if name else names, action, errno, args


def _check_action(action: str, where: str) -> None:
    if action == "SCMP_ACT_NOTIFY":
        raise _Bad(f"{where}: SCMP_ACT_NOTIFY is not supported")
    if action not in _ACTIONS:
        raise _Bad(f"{where}: unknown action {action!r}")


def evaluate(
    profile: Any,
    caps: frozenset[str],
    *,
    arch: str,
    seccomp_arch: str,
    kernel: tuple[int, int],
    source: str = "seccomp profile",
) -> Evaluated | None:
    """Resolve a parsed profile for a host, as moby's ``setupSeccomp`` does.

    Args:
        profile: The parsed JSON.
        caps: The container's capabilities (its bounding set), e.g. ``{"CAP_SYS_ADMIN"}``.
        arch: The host architecture as ``includes``/``excludes`` name it (``"amd64"``).
        seccomp_arch: Its ``SCMP_ARCH_*`` name, which selects the ``archMap`` entry.
        kernel: The host kernel's (version, major revision), e.g. ``(6, 8)``.
        source: How error messages name the profile (its path).

    Returns:
        The evaluated profile, or None if it has neither a default action nor rules (Docker
        then applies no filter).

    Raises:
        InvalidArgument: The profile does not follow Docker's schema.
    """
    try:
        return _evaluate(profile, _Host(caps=caps, arch=arch, kernel=kernel), seccomp_arch)
    except _Bad as e:
        raise InvalidArgument(f"{source}: {e}") from None


def _evaluate(profile: Any, host: _Host, seccomp_arch: str) -> Evaluated | None:
    top = _object(profile, "the profile")
    default_action = _string(top.get("defaultAction"), "defaultAction")
    syscalls = _list(top.get("syscalls"), "syscalls")
    if not default_action and not syscalls:
        return None
    _check_action(default_action, "defaultAction")
    default_errno = _uint(top.get("defaultErrnoRet"), "defaultErrnoRet", 0xFFFF)

    arches = _strings(top.get("architectures"), "architectures")
    arch_map = _list(top.get("archMap"), "archMap")
    if arches and arch_map:
        raise _Bad("'architectures' and 'archMap' were both given, use either one")
    for i, entry in enumerate(arch_map):
        e = _object(entry, f"archMap[{i}]")
        main = _string(e.get("architecture"), f"archMap[{i}].architecture")
        subs = _strings(e.get("subArchitectures"), f"archMap[{i}].subArchitectures")
        if seccomp_arch and main == seccomp_arch:
            arches = [main, *subs]
            break
    for a in arches:
        if not a.startswith("SCMP_ARCH_"):
            raise _Bad(f"unknown architecture {a!r}")

    rules: list[Rule] = []
    for i, call in enumerate(syscalls):
        where = f"syscalls[{i}]"
        rule = _object(call, where)
        parsed = _rule(rule, where)  # validated even when dropped, like Go's unmarshal
        if _keep(rule, host, where) and parsed[0]:
            rules.append(parsed)
    return Evaluated(
        default_action=default_action,
        default_errno=default_errno,
        arches=tuple(arches),
        rules=tuple(rules),
    )


def _cache_key(data: bytes, caps: frozenset[str], arch: str, release: str) -> bytes:
    """Everything a compiled program depends on, as one byte string (length-prefixed parts)."""
    parts = (
        _CACHE_FORMAT,
        __version__.encode(),
        data,
        "\0".join(sorted(caps)).encode(),
        arch.encode(),
        release.encode(),
    )
    return b"".join(len(p).to_bytes(8, "little") + p for p in parts)


def _cache_file(cache_dir: str, key: bytes) -> str:
    """Where the program for ``key`` is cached. Two keys may share a file: it holds its key."""
    import zlib  # a cheaper import than hashlib; the file's key, not its name, is checked

    return os.path.join(cache_dir, f"seccomp-{zlib.crc32(key):08x}.bpf")


def _read_cached(path: str, key: bytes) -> bytes | None:
    """The program :func:`_write_cached` stored for ``key``; None if missing, stale or corrupt."""
    import zlib

    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    head = _cache_head(key)
    program = blob[len(head) + 4 :]
    if (
        not blob.startswith(head)
        or blob[len(head) : len(head) + 4] != zlib.crc32(program).to_bytes(4, "little")
        or not program
        or len(program) % 8
    ):
        return None
    return program


def _cache_head(key: bytes) -> bytes:
    return _CACHE_MAGIC + len(key).to_bytes(8, "little") + key


def _write_cached(path: str, key: bytes, program: bytes) -> None:
    """Write atomically (temp file + rename), with a checksum; failures only cost a recompile."""
    import contextlib
    import tempfile
    import zlib

    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".seccomp-", dir=directory)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_cache_head(key) + zlib.crc32(program).to_bytes(4, "little") + program)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def compile_profile(
    path: str | None, caps: frozenset[str], *, cache_dir: str | None
) -> bytes | None:
    """Load, evaluate and compile a profile for this host; cached.

    Args:
        path: A profile JSON file, or None for Docker's default profile.
        caps: The container's capabilities (its bounding set).
        cache_dir: Where compiled programs persist between runs (None: in memory only).

    Returns:
        The BPF program (``struct sock_filter[]`` bytes), or None if the profile disables
        seccomp (no default action and no rules, as Docker reads it).

    Raises:
        InvalidArgument: The profile cannot be read, parsed or compiled.
    """
    data = _read(path)
    arch, seccomp_arch = native_arch()
    release = os.uname().release
    key = _cache_key(data, caps, arch, release)
    if key in _memory:
        return _memory[key] or None
    cache_file = _cache_file(cache_dir, key) if cache_dir else None
    program = _read_cached(cache_file, key) if cache_file else None
    if program is None:  # only now parse the JSON: that alone costs more than a cache hit
        evaluated = evaluate(
            _parse(data, path),
            caps,
            arch=arch,
            seccomp_arch=seccomp_arch,
            kernel=_kernel(release),
            source=f"seccomp profile {path or _DEFAULT}",
        )
        if evaluated is None:
            _memory[key] = b""
            return None
        program = _compile(evaluated, path or _DEFAULT)
        if cache_file:
            _write_cached(cache_file, key, program)
    _memory[key] = program
    return program


def _compile(evaluated: Evaluated, source: str) -> bytes:
    from kobako import _native

    rules = [(list(n), a, e, list(c)) for n, a, e, c in evaluated.rules]
    try:
        return _native.compile_seccomp(
            evaluated.default_action, evaluated.default_errno, list(evaluated.arches), rules
        )
    except InvalidArgument as e:
        raise InvalidArgument(
            f"seccomp profile {source}: {str(e).removeprefix('seccomp: ')}"
        ) from None
