"""Parsers for ``docker run``'s flag values, with Docker's own semantics.

Each function turns one docker-style value into the typed pieces of :mod:`kobako.runtime.spec`
(or a plain number) and raises :class:`~kobako.errors.InvalidArgument` with a one-line
message that names the bad value. The rules are those of the code Docker runs, read from
its sources: go-units (``RAMInBytes``, ``ParseUlimit``), docker/cli (``opts/mount.go``,
``ParseCPUs``, ``ValidateEnv``), moby (the Linux volume parser, ``MergeTmpfsOptions``, the
default capabilities, ``ParseSignal``, ``ParseUintList``) and moby/sys/user
(``GetExecUser``). Where Docker would pass on garbage that only fails later, or produce
a nonsense value (a size past 2**63, a NaN, a ulimit of -2), these parsers reject it now.

Mounts come out in OCI form: a bind from ``-v``/``--mount`` has options
``("rbind" | "bind", ["rro",] "ro" | "rw", PROPAGATION)``, where ``rro`` (recursively
read-only, as runc spells it) appears only for ``ro-force-recursive``; a volume has
``type="volume"``, its name as ``source`` (empty for an anonymous one), a bind's options and
``nocopy`` if asked: it becomes a bind of the volume's directory when the container is made
(:mod:`kobako.runtime.volumes`). A tmpfs has Docker's defaults ``noexec,nosuid,nodev,rprivate``
merged with the user's options as Docker merges them (a later option of the same kind
replaces an earlier one).

The module imports only the standard library and nothing slow: the CLI imports it.
"""

from __future__ import annotations

import os

from kobako._record import Record
from kobako.errors import InvalidArgument, NotFound
from kobako.runtime.spec import Mount, PortMapping, Rlimit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "CAPABILITIES",
    "DOCKER_DEFAULT_CAPS",
    "RLIMIT_NUMBERS",
    "ResolvedUser",
    "capability_mask",
    "check_cpus",
    "parse_add_host",
    "parse_bytes",
    "parse_capability",
    "parse_cpus",
    "parse_cpuset",
    "parse_env",
    "parse_memory_swap",
    "parse_mount",
    "parse_publish",
    "parse_signal",
    "parse_tmpfs",
    "parse_ulimit",
    "parse_user",
    "parse_volume",
    "resolve_user",
]

_INT64_MAX = (1 << 63) - 1


# --- Go number syntax -------------------------------------------------------------------------


def _go_atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi`` syntax: an optional sign and ASCII digits; None if not a number."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(text)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _unsigned(text: str) -> tuple[str, str]:
    """Split off one leading sign: ``"-1.5"`` -> ``("-", "1.5")``, ``"2"`` -> ``("", "2")``."""
    return (text[:1], text[1:]) if text[:1] in ("+", "-") else ("", text)


_DIGITS = "0123456789"
_HEX_DIGITS = "0123456789abcdefABCDEF"


def _float_parts(
    text: str, digits: str, mark: str, exponent_digits: str
) -> tuple[str, str, str | None] | None:
    """Split an unsigned float ``W[.F][MARK[+-]X]`` into ``(W, F, X)``, X signed, or None.

    W and F are made of ``digits``, one of them at least non-empty; the exponent mark (``"e"``
    or ``"p"``, in either case) and X, made of ``exponent_digits``, are optional together.
    This is the regular expression ``(?:[D]+\\.?[D]*|\\.[D]+)(?:[Mm][+-]?[X]+)?``, by hand:
    importing re would cost the CLI milliseconds.

    Returns:
        ``(W, F, X)``, X None without an exponent; None if ``text`` has another form.
    """
    mantissa, marked, exponent = text.replace(mark.upper(), mark).partition(mark)
    whole, _, fraction = mantissa.partition(".")
    exponent_body = _unsigned(exponent)[1]
    if (
        not (whole or fraction)
        or (whole + fraction).strip(digits)
        or exponent_body.strip(exponent_digits)
        or (marked and not exponent_body)
    ):
        return None
    return whole, fraction, exponent if marked else None


def _underscores_ok(text: str) -> bool:
    """Go's rule for ``_`` in a number: only between digits, or after a base prefix."""
    text = text[1:] if text[:1] in ("+", "-") else text
    saw = "^"  # ^ start, 0 digit or prefix, _ underscore, ! anything else
    start = 0
    hexadecimal = text[:2].lower() == "0x"
    if hexadecimal:
        saw, start = "0", 2
    for char in text[start:]:
        if char.isdigit() or (hexadecimal and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def _go_float_parser(text: str) -> Callable[[str], float] | None:
    """How to parse ``text`` in Go's float syntax: float, float.fromhex, or None if not in it.

    Underscores are accepted anywhere here; :func:`_underscores_ok` checks where they are.
    """
    body = _unsigned(text)[1]
    if _float_parts(body, _DIGITS + "_", "e", _DIGITS + "_") is not None:
        return float
    if body[:2] in ("0x", "0X"):
        parts = _float_parts(body[2:], _HEX_DIGITS + "_", "p", _DIGITS + "_")
        if parts is not None and parts[2] is not None:  # a hexadecimal float needs its exponent
            return float.fromhex
    return None


def _go_parse_float(text: str) -> float | None:
    """A finite float from Go's ``strconv.ParseFloat`` syntax; None if malformed or infinite."""
    parse = _go_float_parser(text)
    if parse is None:
        return None
    if "_" in text and not _underscores_ok(text):
        return None
    try:
        number = parse(text.replace("_", ""))
    except (ValueError, OverflowError):
        return None
    return number if abs(number) != float("inf") else None


# --- sizes ------------------------------------------------------------------------------------

_BINARY_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(value: str | int) -> int:
    """Parse a byte count as Docker's ``--memory`` does (go-units ``RAMInBytes``).

    A number (fractions allowed) with an optional, case-insensitive unit: ``b``, or
    ``k``/``m``/``g``/``t``/``p`` optionally followed by ``b`` or ``ib``; every unit is binary
    (``1k`` is 1024). One space may separate number and unit. Fractions are truncated after
    scaling, as Docker does (``1.5k`` is 1536, ``0.1k`` is 102).

    Args:
        value: E.g. ``"512m"``, ``"1.5g"``, ``"100KiB"``, ``"1024"``, or an int.

    Returns:
        The number of bytes.

    Raises:
        InvalidArgument: The value is negative, malformed, or does not fit in 63 bits.

    Example:
        >>> parse_bytes("512m")
        536870912
    """
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(f"invalid size: {value!r}: must not be negative")
        return value
    sep = len(value) - 1
    while sep >= 0 and value[sep] not in "0123456789. ":
        sep -= 1
    if sep < 0:
        raise InvalidArgument(f"invalid size: {value!r}")
    number = value[:sep] if value[sep] == " " else value[: sep + 1]
    suffix = value[sep + 1 :]
    size = _go_parse_float(number)
    if size is None or size < 0:
        raise InvalidArgument(f"invalid size: {value!r}")
    if suffix:
        unit = suffix.lower()
        if len(suffix.encode()) > 3 or not _valid_unit(unit):
            raise InvalidArgument(f"invalid size: {value!r}: invalid suffix {suffix!r}")
        if unit[0] != "b":
            size *= _BINARY_UNITS[unit[0]]
    if size >= 2.0**63:
        raise InvalidArgument(f"invalid size: {value!r}: too large")
    return int(size)


def _valid_unit(unit: str) -> bool:
    if unit == "b":
        return True
    return unit[0] in _BINARY_UNITS and unit[1:] in ("", "b", "ib")


def parse_memory_swap(value: str | int) -> int:
    """Parse ``--memory-swap``: a byte count as :func:`parse_bytes`, or ``-1`` for unlimited.

    Args:
        value: E.g. ``"1g"``, ``"-1"``, ``-1``.

    Returns:
        The number of bytes, or -1.

    Raises:
        InvalidArgument: The value is malformed or negative other than -1.
    """
    if value == -1 or value == "-1":
        return -1
    return parse_bytes(value)


# --- CPUs -------------------------------------------------------------------------------------

_NANO = 10**9


def parse_cpus(value: str | float) -> int:
    """Parse ``--cpus`` into nano CPUs, exactly (docker/cli ``ParseCPUs``).

    The value is a decimal (``0.5``, ``1.25``, ``2e-1``) or a fraction (``1/3`` is too
    precise, ``1/2`` is fine); it must be a whole number of billionths of a CPU.

    Args:
        value: E.g. ``"0.5"``, ``1.5``, ``"3/4"``.

    Returns:
        The quota in billionths of a CPU (``"0.5"`` is 500_000_000).

    Raises:
        InvalidArgument: Not a rational number, too precise, negative, or absurdly large.
    """
    text = repr(value) if isinstance(value, float) else str(value)
    nano = _nano_cpus(text)
    if nano < 0:
        raise InvalidArgument(f"invalid cpus value {text!r}: must not be negative")
    if nano > _INT64_MAX:
        raise InvalidArgument(f"invalid cpus value {text!r}: too large")
    return nano


def _fraction(text: str) -> tuple[int, int] | None:
    """``[+-]N/D`` (ASCII digits) as ``(N, D)``; None if ``text`` is not of that form."""
    numerator, slash, denominator = text.partition("/")
    if slash and _is_digits(_unsigned(numerator)[1]) and _is_digits(denominator):
        return int(numerator), int(denominator)
    return None


def _nano_cpus(text: str) -> int:
    if fraction := _fraction(text):
        numerator, denominator = fraction
        if denominator == 0:
            raise InvalidArgument(f"failed to parse {text!r} as a rational number")
        quotient, rest = divmod(numerator * _NANO, denominator)
        if rest:
            raise InvalidArgument(f"invalid cpus value {text!r}: value is too precise")
        return quotient
    sign, unsigned = _unsigned(text)
    decimal = _float_parts(unsigned, _DIGITS, "e", _DIGITS)
    if decimal is None:
        raise InvalidArgument(f"failed to parse {text!r} as a rational number")
    whole, frac, exp = decimal
    digits = (whole + frac).lstrip("0")
    if not digits:
        return 0
    # value = int(digits) * 10**shift, with no trailing zeros left in digits.
    shift = int(exp or 0) - len(frac) + 9 + (len(digits) - len(digits.rstrip("0")))
    digits = digits.rstrip("0")
    if shift < 0:
        raise InvalidArgument(f"invalid cpus value {text!r}: value is too precise")
    if shift + len(digits) > 20:  # past 2**63 whatever the digits
        raise InvalidArgument(f"invalid cpus value {text!r}: too large")
    nano: int = int(digits) * 10**shift
    return -nano if sign == "-" else nano


def check_cpus(nano: int, *, ncpu: int | None = None) -> None:
    """Check a ``--cpus`` quota against the CPUs this process may run on, as dockerd does.

    Args:
        nano: The quota in billionths of a CPU.
        ncpu: The number of CPUs available; default: this process's CPU affinity.

    Raises:
        InvalidArgument: The quota is negative or more than the CPUs available.
    """
    if ncpu is None:
        ncpu = len(os.sched_getaffinity(0))
    if nano < 0 or nano > ncpu * _NANO:
        sign = "-" if nano < 0 else ""
        cpus = f"{abs(nano) // _NANO}.{abs(nano) % _NANO:09d}".rstrip("0").rstrip(".")
        raise InvalidArgument(
            f"invalid cpus value {sign}{cpus}: range of CPUs is from 0.01 to {ncpu}.00, "
            f"as there are only {ncpu} CPUs available"
        )


def parse_cpuset(value: str) -> str:
    """Validate ``--cpuset-cpus`` as dockerd does (``ParseUintList``): e.g. ``0-2,4``.

    Args:
        value: Comma-separated CPU numbers and ascending ranges; empty means unset.

    Returns:
        The value, unchanged (it is written to the cgroup as given).

    Raises:
        InvalidArgument: An item is not a number or an ascending ``LOW-HIGH`` range.
    """
    for item in value.split(",") if value else ():
        low, dash, high = item.partition("-")
        if not dash:
            valid = _is_digits(item)
        else:
            valid = _is_digits(low) and _is_digits(high) and int(low) <= int(high)
        if not valid:
            raise InvalidArgument(f"invalid value {value!r} for cpuset cpus")
    return value


# --- users ------------------------------------------------------------------------------------

_MAX_ID = (1 << 31) - 1
_RANGE_ERROR = f"uids and gids must be in range 0-{_MAX_ID}"


class ResolvedUser(Record):
    """The ids a container process runs as, from :func:`resolve_user`.

    Attributes:
        uid: The user id.
        gid: The primary group id.
        additional_gids: The groups to pass to setgroups(2): the primary group first, then
            the groups of /etc/group that list the user's name (as dockerd builds them).
        home: The user's home directory (for ``HOME``), ``/`` if the user has no entry.
    """

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _numeric_id(text: str, spec: str) -> int | None:
    """A uid/gid if ``text`` is numeric (Go's Atoi), None if it is a name."""
    number = _go_atoi(text)
    if number is not None and not 0 <= number <= _MAX_ID:
        raise InvalidArgument(f"invalid user {spec!r}: {_RANGE_ERROR}")
    return number


def parse_user(value: str) -> tuple[str, str | None]:
    """Split and check ``-u``: ``user[:group]``, each a name or a numeric id.

    Args:
        value: E.g. ``"1000"``, ``"1000:1000"``, ``"nobody"``, ``"app:staff"``; ``""`` means
            the default (root).

    Returns:
        ``(user, group)``; group is None when not given.

    Raises:
        InvalidArgument: A part is empty, there is more than one colon, or an id is out of
            range.
    """
    if not value:
        return "", None
    user, colon, group = value.partition(":")
    if not user or (colon and not group):
        raise InvalidArgument(f"invalid user {value!r}: expected USER[:GROUP], with neither empty")
    if ":" in group:
        raise InvalidArgument(f"invalid user {value!r}: expected USER[:GROUP], one colon at most")
    _numeric_id(user, value)
    if colon:
        _numeric_id(group, value)
        return user, group
    return user, None


def _lines(data: bytes) -> Iterable[list[str]]:
    """The colon-separated fields of each non-blank, non-comment line."""
    for raw in data.split(b"\n"):
        line = raw.strip()
        if line and not line.startswith(b"#"):
            yield line.decode("utf-8", "surrogateescape").split(":")


def _field_int(fields: list[str], index: int) -> int:
    """A numeric field as runc reads it: 0 when missing or malformed, clamped to 64 bits."""
    number = _go_atoi(fields[index]) if index < len(fields) else None
    return 0 if number is None else max(-_INT64_MAX - 1, min(number, _INT64_MAX))


def resolve_user(user: str, passwd: bytes | None, group: bytes | None) -> ResolvedUser:
    """Resolve ``-u`` against a container's /etc/passwd and /etc/group, as Docker does.

    This is runc's ``GetExecUser`` (moby/sys/user) as dockerd uses it. A numeric user is a
    uid even without a passwd entry (then its group is 0 and its home ``/``); a name must
    have an entry. An explicit group (name or gid) replaces the entry's group and then no
    supplementary groups are looked up; otherwise the groups that list the matched user's
    name are. An empty user is uid 0, looked up like any other. Blank lines and ``#``
    comments are skipped in both files.

    Args:
        user: ``-u`` as given: ``""``, ``uid``, ``name``, ``uid:gid``, ``name:group``...
        passwd: The container's /etc/passwd, or None if it has none.
        group: The container's /etc/group, or None if it has none.

    Returns:
        The ids and home directory to run with.

    Raises:
        NotFound: A user or group name has no entry.
        InvalidArgument: A numeric id is out of range.
    """
    user_name, _, group_name = user.partition(":")
    uid_arg = _numeric_id(user_name, user) if user_name else None
    gid_arg = _numeric_id(group_name, user) if group_name else None

    uid, gid, home, matched = 0, 0, "/", ""
    for fields in _lines(passwd or b""):
        entry_uid = _field_int(fields, 2)
        if not user_name:
            found = entry_uid == uid
        elif uid_arg is not None:
            found = entry_uid == uid_arg
        else:
            found = fields[0] == user_name
        if found:
            matched, uid, gid = fields[0], entry_uid, _field_int(fields, 3)
            home = fields[5] if len(fields) > 5 else ""
            break
    else:
        if user_name and uid_arg is None:
            raise NotFound(f"unable to find user {user_name}: no matching entries in passwd file")
        if uid_arg is not None:
            uid = uid_arg

    supplementary: list[int] = []
    if group_name or matched:
        groups = []
        for fields in _lines(group or b""):
            if not group_name:
                members = fields[3].split(",") if len(fields) > 3 and fields[3] else []
                found = matched in members
            elif gid_arg is not None:
                found = _field_int(fields, 2) == gid_arg
            else:
                found = fields[0] == group_name
            if found:
                groups.append(_field_int(fields, 2))
        if group_name:
            if groups:
                gid = groups[0]
            elif gid_arg is not None:
                gid = gid_arg
            else:
                raise NotFound(
                    f"unable to find group {group_name}: no matching entries in group file"
                )
        else:
            supplementary = groups
    return ResolvedUser(uid=uid, gid=gid, additional_gids=(gid, *supplementary), home=home)


# --- environment ------------------------------------------------------------------------------


def parse_env(values: Sequence[str], host_env: Mapping[str, str]) -> tuple[str, ...]:
    """Parse ``-e`` values (docker/cli ``ValidateEnv``).

    ``KEY=VALUE`` is kept as is (the value may be empty or contain ``=``); a bare ``KEY``
    takes its value from ``host_env`` and is dropped when the host does not set it.

    Args:
        values: The ``-e`` values in order.
        host_env: The environment to take bare keys from (usually ``os.environ``).

    Returns:
        ``KEY=VALUE`` strings, in order.

    Raises:
        InvalidArgument: A value has an empty key.
    """
    env = []
    for value in values:
        key, equals, _ = value.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable: {value!r}")
        if equals:
            env.append(value)
        elif key in host_env:
            env.append(f"{key}={host_env[key]}")
    return tuple(env)


# --- mounts -----------------------------------------------------------------------------------

_PROPAGATIONS = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared"})
_RW_MODES = frozenset({"rw", "ro", "ro-non-recursive", "ro-force-recursive", "rro"})
_LABEL_MODES = frozenset({"z", "Z"})
_CONSISTENCY_MODES = frozenset({"consistent", "cached", "delegated"})
_COPY_MODES = frozenset({"nocopy"})
_MODE_KINDS = (_RW_MODES, _LABEL_MODES, _PROPAGATIONS, _COPY_MODES, _CONSISTENCY_MODES)


def _clean(path: str) -> str:
    """Go's ``path.Clean`` for an absolute path."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def _absolute_source(source: str) -> str:
    """docker/cli makes a source that starts with ``.`` absolute, from the working directory."""
    if source.startswith("."):
        return _clean(os.getcwd() + "/" + source)
    return source


def _target_error(target: str) -> str | None:
    """Why a container path cannot be a mount target (moby's checks), or None."""
    if not target:
        return "field Target must not be empty"
    return _tmpfs_target_error(target)


def _tmpfs_target_error(target: str) -> str | None:
    """Why a path cannot be a ``--tmpfs`` target (moby checks no empty field here), or None."""
    if not target.startswith("/"):
        return f"invalid mount path: {target!r} mount path must be absolute"
    if _clean(target) == "/":
        return "invalid specification: destination can't be '/'"
    return None


def _valid_mode(mode: str) -> bool:
    """moby's ``linuxValidMountMode``: known words, at most one of each kind."""
    if not mode:
        return True
    counts = [0] * len(_MODE_KINDS)
    for word in mode.split(","):
        kind = next((i for i, kinds in enumerate(_MODE_KINDS) if word in kinds), None)
        if kind is None:
            return False
        counts[kind] += 1
    return max(counts) <= 1


def _bind_options(
    *, recursive: bool, readonly: bool, force_recursive: bool, propagation: str
) -> tuple[str, ...]:
    options = ["rbind" if recursive else "bind"]
    if readonly:
        options += ["rro", "ro"] if force_recursive else ["ro"]
    else:
        options.append("rw")
    options.append(propagation or "rprivate")
    return tuple(options)


def parse_volume(value: str) -> Mount:
    """Parse ``-v [SOURCE:]CONTAINER[:OPTIONS]`` as dockerd does.

    SOURCE is a host path (a bind mount), a volume name (a named volume, made on first
    use), or nothing (``-v /path``: an anonymous volume). OPTIONS is a comma list with at
    most one word of each kind: ``rw``, ``ro``, ``ro-non-recursive``,
    ``ro-force-recursive``/``rro``; ``z``/``Z`` (SELinux labels, accepted and ignored); a
    propagation (``private``, ``rprivate``, ``slave``, ``rslave``, ``shared``, ``rshared``;
    default ``rprivate``); ``consistent``/``cached``/``delegated`` (ignored on Linux);
    ``nocopy`` (volumes only: no first-use copy of the image's content). A host path
    starting with ``.`` is taken from the working directory. Docker creates a missing host
    directory when the container starts; so must the runtime.

    Args:
        value: E.g. ``"/srv/data:/data:ro"``, ``"cache:/cache"`` or ``"/scratch"``.

    Returns:
        ``Mount(type="bind", source=HOST, destination=CONTAINER, options=(...))``, both paths
        cleaned; for a volume ``Mount(type="volume", source=NAME, ...)`` with the same
        options (plus ``nocopy`` if given), ``source`` empty for an anonymous one.

    Raises:
        InvalidArgument: The spec is malformed, a path is not absolute, the target is ``/``,
            a volume name is not one Docker accepts, or ``nocopy`` is given for a bind.
    """
    from kobako.runtime.volumes import check_name

    parts = value.split(":", 3)
    if not parts[0] or len(parts) == 4 or (len(parts) == 2 and _valid_mode(parts[1])):
        raise InvalidArgument(f"invalid volume specification: {value!r}")
    source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    mode = parts[2] if len(parts) == 3 else ""
    if not _valid_mode(mode):
        raise InvalidArgument(f"invalid volume specification: {value!r}: invalid mode: {mode!r}")
    if error := _target_error(target):
        raise InvalidArgument(f"invalid volume specification: {value!r}: {error}")
    source = _absolute_source(source)
    words = mode.split(",")
    options = _bind_options(
        recursive=True,
        readonly=any(w in ("ro", "rro") or w.startswith("ro-") for w in words),
        force_recursive=any(w in ("ro-force-recursive", "rro") for w in words),
        propagation=next((w for w in words if w in _PROPAGATIONS), ""),
    )
    if not source.startswith("/"):
        if source:
            check_name(source)
        nocopy = ("nocopy",) if "nocopy" in words else ()
        return Mount(
            destination=_clean(target), type="volume", source=source, options=options + nocopy
        )
    if "nocopy" in words:
        raise InvalidArgument(
            f"invalid volume specification: {value!r}: invalid mount config for type "
            '"bind": field VolumeOptions must not be specified'
        )
    return Mount(destination=_clean(target), type="bind", source=_clean(source), options=options)


def _csv_record(value: str) -> list[str]:
    """The first record of ``value`` as Go's ``encoding/csv`` reads it (strict quotes)."""
    text = value.replace("\r\n", "\n")
    fields: list[str] = []
    i, end = 0, len(text)
    while True:
        if text.startswith('"', i):
            i += 1
            chunks = []
            while True:
                close = text.find('"', i)
                if close < 0:
                    raise InvalidArgument(f"invalid mount {value!r}: missing closing quote")
                chunks.append(text[i:close])
                i = close + 1
                if text.startswith('"', i):
                    chunks.append('"')
                    i += 1
                    continue
                break
            fields.append("".join(chunks))
            if i >= end or text[i] == "\n":
                return fields
            if text[i] != ",":
                raise InvalidArgument(f'invalid mount {value!r}: extraneous " in quoted field')
            i += 1
        else:
            stop = min((j for j in (text.find(",", i), text.find("\n", i)) if j >= 0), default=end)
            field = text[i:stop]
            if '"' in field:
                raise InvalidArgument(f'invalid mount {value!r}: bare " in non-quoted field')
            fields.append(field)
            if stop >= end or text[stop] == "\n":
                return fields
            i = stop + 1


def _bool_option(key: str, value: str | None) -> bool:
    """docker/cli's ``parseBoolValue``: no value is true; else 1, true, 0 or false."""
    if value is None or value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise InvalidArgument(
        f"invalid value for {key!r}: invalid boolean value ({value!r}): must be one of "
        '"true", "1", "false", or "0" (default "true")'
    )


_BOOL_KEYS = frozenset({"readonly", "ro", "volume-nocopy", "bind-nonrecursive", "bind-create-src"})


def parse_mount(value: str) -> Mount:
    """Parse ``--mount`` (docker/cli's CSV syntax and checks, then dockerd's).

    Keys: ``type`` (``volume``, the default, ``bind`` or ``tmpfs``), ``source``/``src``
    (a volume's name; none for an anonymous volume), ``target``/``destination``/``dst``,
    ``readonly``/``ro`` (optionally
    ``=true|false|1|0``), ``bind-propagation``, ``bind-recursive``
    (``enabled|disabled|writable|readonly``), ``bind-create-src``, ``consistency``
    (ignored), ``tmpfs-size`` (a byte count), ``tmpfs-mode`` (octal). A bind source must
    exist unless ``bind-create-src`` is set; a source starting with ``.`` is taken from the
    working directory.

    Args:
        value: E.g. ``"type=bind,src=/srv,dst=/srv,readonly"``.

    Returns:
        A bind or tmpfs :class:`~kobako.runtime.spec.Mount` in OCI form, or a volume one
        as :func:`parse_volume` makes it.

    Raises:
        InvalidArgument: Any key or value Docker rejects, with Docker's reason.
    """
    value = value.strip()
    if not value:
        raise InvalidArgument("invalid mount '': value is empty")
    mount_type, source, target = "volume", "", ""
    readonly = create_src = nonrecursive = ro_nonrecursive = ro_force = nocopy = False
    propagation = ""
    tmpfs_size = tmpfs_mode = 0
    used: set[str] = set()  # which kinds of type-specific options were given

    for field in _csv_record(value):
        key, equals, val = field.partition("=")
        option: str | None = val if equals else None
        if key.strip() != key:
            raise InvalidArgument(
                f"invalid option {key.strip()!r} in {field!r}: option should not have whitespace"
            )
        if option is not None:
            if not option.strip():
                raise InvalidArgument(f"invalid value for {key!r}: value is empty")
            if option.strip() != option:
                raise InvalidArgument(
                    f"invalid value for {key!r} in {field!r}: value should not have whitespace"
                )
        key = key.lower()
        if option is None and key not in _BOOL_KEYS:
            raise InvalidArgument(f"invalid field {field!r} must be a key=value pair")
        val = option or ""
        kind = key.partition("-")[0]
        if key == "type":
            mount_type = val.lower()
        elif key in ("source", "src"):
            source = _absolute_source(val)
        elif key in ("target", "dst", "destination"):
            target = val
        elif key in ("readonly", "ro"):
            readonly = _bool_option(key, option)
        elif key == "consistency":
            pass
        elif key == "bind-propagation":
            used.add(kind)
            propagation = val.lower()
        elif key == "bind-nonrecursive":
            raise InvalidArgument("bind-nonrecursive is deprecated, use bind-recursive=disabled")
        elif key == "bind-recursive":
            if val not in ("enabled", "disabled", "writable", "readonly"):
                raise InvalidArgument(
                    f"invalid value for {key}: {val} "
                    '(must be "enabled", "disabled", "writable", or "readonly")'
                )
            if val != "enabled":  # "enabled" is the default: Docker records nothing
                used.add(kind)
            nonrecursive = val == "disabled"
            ro_nonrecursive = val == "writable"
            ro_force = val == "readonly"
        elif key == "bind-create-src":
            used.add(kind)
            create_src = _bool_option(key, option)
        elif key == "volume-nocopy":
            used.add(kind)
            nocopy = _bool_option(key, option)
        elif key == "volume-driver":
            used.add(kind)
            if val != "local":
                raise InvalidArgument(f"invalid mount {value!r}: volume driver {val!r} not found")
        elif key in ("volume-subpath", "volume-label", "volume-opt"):
            raise InvalidArgument(f"invalid mount {value!r}: {key} is not supported yet")
        elif key == "image-subpath":
            used.add(kind)
        elif key == "tmpfs-size":
            used.add(kind)
            try:
                tmpfs_size = parse_bytes(val)
            except InvalidArgument:
                raise InvalidArgument(f"invalid value for {key}: {val}") from None
        elif key == "tmpfs-mode":
            used.add(kind)
            if not set(val) <= set("01234567") or int(val, 8) >= 1 << 32:
                raise InvalidArgument(f"invalid value for {key}: {val}")
            tmpfs_mode = int(val, 8)
        else:
            raise InvalidArgument(f"unknown option {key!r} in {field!r}")

    for kind in ("bind", "volume", "image", "tmpfs"):
        if kind in used and kind != mount_type:
            raise InvalidArgument(
                f"cannot mix '{kind}-*' options with mount type {mount_type!r} in {value!r}"
            )
    if ro_nonrecursive and not readonly:
        raise InvalidArgument(
            "option 'bind-recursive=writable' requires 'readonly' to be specified in conjunction"
        )
    if ro_force and not readonly:
        raise InvalidArgument(
            "option 'bind-recursive=readonly' requires 'readonly' to be specified in conjunction"
        )
    if ro_force and propagation != "rprivate":
        raise InvalidArgument(
            "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' "
            "to be specified in conjunction"
        )

    if mount_type == "image":
        raise InvalidArgument(f"invalid mount {value!r}: image mounts are not supported yet")
    problem = f"invalid mount config for type {mount_type!r} in {value!r}"
    if error := _target_error(target):
        raise InvalidArgument(f"{problem}: {error}")
    if mount_type not in ("bind", "tmpfs", "volume"):
        raise InvalidArgument(f"{problem}: mount type unknown")
    destination = _clean(target)

    if mount_type == "volume":
        from kobako.runtime.volumes import check_name

        if source:
            check_name(source)
        options = _bind_options(
            recursive=True, readonly=readonly, force_recursive=False, propagation=""
        )
        options += ("nocopy",) if nocopy else ()
        return Mount(destination=destination, type="volume", source=source, options=options)

    if mount_type == "tmpfs":
        if source:
            raise InvalidArgument(f"{problem}: field Source must not be specified")
        data = ["ro"] if readonly else []
        if tmpfs_mode:
            data.append(f"mode={tmpfs_mode:o}")
        if tmpfs_size:
            data.append(f"size={_tmpfs_size(tmpfs_size)}")
        options = _merge_tmpfs_options([*_TMPFS_DEFAULTS, *data], value)
        return Mount(destination=destination, type="tmpfs", source="tmpfs", options=options)

    if not source:
        raise InvalidArgument(f"{problem}: field Source must not be empty")
    if propagation and propagation not in _PROPAGATIONS:
        raise InvalidArgument(f"{problem}: invalid propagation mode: {propagation}")
    if not source.startswith("/"):
        raise InvalidArgument(
            f"{problem}: invalid mount path: {source!r} mount path must be absolute"
        )
    if not create_src and not os.path.exists(source):
        raise InvalidArgument(f"{problem}: bind mount source path does not exist: {source}")
    options = _bind_options(
        recursive=not nonrecursive,
        readonly=readonly,
        force_recursive=ro_force,
        propagation=propagation,
    )
    return Mount(destination=destination, type="bind", source=_clean(source), options=options)


def _tmpfs_size(size: int) -> str:
    """A tmpfs ``size=`` value with the largest binary unit that divides it (as dockerd)."""
    for suffix, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % divisor == 0:
            return f"{size // divisor}{suffix}"
    return str(size)


# Docker's options for every tmpfs from --tmpfs or --mount, before the user's.
_TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev", "rprivate")

# Mount flags as moby/sys/mount knows them, each with what it collides with: a later option
# of the same group replaces an earlier one (ro/rw, exec/noexec, one propagation...).
_FLAG_GROUPS = {
    **dict.fromkeys(("ro", "rw"), "rdonly"),
    **dict.fromkeys(("suid", "nosuid"), "nosuid"),
    **dict.fromkeys(("dev", "nodev"), "nodev"),
    **dict.fromkeys(("exec", "noexec"), "noexec"),
    **dict.fromkeys(("sync", "async"), "sync"),
    "dirsync": "dirsync",
    "remount": "remount",
    **dict.fromkeys(("mand", "nomand"), "mand"),
    **dict.fromkeys(("atime", "noatime"), "noatime"),
    **dict.fromkeys(("diratime", "nodiratime"), "nodiratime"),
    **dict.fromkeys(("relatime", "norelatime"), "relatime"),
    **dict.fromkeys(("strictatime", "nostrictatime"), "strictatime"),
    **dict.fromkeys(
        ("bind", "rbind", "unbindable", "runbindable", *sorted(_PROPAGATIONS)), "propagation"
    ),
}
_TMPFS_DATA_KEYS = frozenset({"", "size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})


def _merge_tmpfs_options(options: Sequence[str], value: str) -> tuple[str, ...]:
    """moby's ``MergeTmpfsOptions``: keep the last option of each kind, in order."""
    seen: set[str] = set()
    merged: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        if option in _FLAG_GROUPS:
            group = _FLAG_GROUPS[option]
        else:
            key, equals, _ = option.partition("=")
            if not equals or key not in _TMPFS_DATA_KEYS:
                raise InvalidArgument(f"invalid tmpfs option {option!r} in {value!r}")
            group = "=" + key
        if group not in seen:
            seen.add(group)
            merged.append(option)
    return tuple(reversed(merged))


def parse_tmpfs(value: str) -> Mount:
    """Parse ``--tmpfs PATH[:OPTIONS]`` as dockerd does.

    OPTIONS are mount(8)-style (``rw``, ``ro``, ``exec``, ``size=64m``, ``mode=1777``,
    ``uid=``, ``gid=``, ``nr_inodes=``...). They are merged over Docker's defaults
    ``noexec,nosuid,nodev,rprivate``, a later option replacing an earlier one of its kind.

    Args:
        value: E.g. ``"/run:rw,size=64m,mode=1777"``.

    Returns:
        ``Mount(type="tmpfs", source="tmpfs", destination=PATH, options=(...))``.

    Raises:
        InvalidArgument: The path is not absolute or is ``/``, or an option is unknown.
    """
    target, _, data = value.partition(":")
    if error := _tmpfs_target_error(target):
        raise InvalidArgument(f"invalid tmpfs {value!r}: {error}")
    options = _merge_tmpfs_options([*_TMPFS_DEFAULTS, *(data.split(",") if data else ())], value)
    return Mount(destination=_clean(target), type="tmpfs", source="tmpfs", options=options)


# --- ulimits ----------------------------------------------------------------------------------

#: ``--ulimit`` names and their RLIMIT_* numbers (Linux's generic ABI: x86, arm, riscv...).
RLIMIT_NUMBERS: dict[str, int] = {
    "cpu": 0,
    "fsize": 1,
    "data": 2,
    "stack": 3,
    "core": 4,
    "rss": 5,
    "nproc": 6,
    "nofile": 7,
    "memlock": 8,
    "locks": 10,
    "sigpending": 11,
    "msgqueue": 12,
    "nice": 13,
    "rtprio": 14,
    "rttime": 15,
}


def _ulimit_value(text: str, value: str) -> int:
    number = -1 if text == "infinity" else _go_atoi(text)
    if number is None or not -1 <= number <= _INT64_MAX:
        raise InvalidArgument(f"invalid ulimit value {text!r} in {value!r}")
    return number


def parse_ulimit(value: str) -> Rlimit:
    """Parse ``--ulimit NAME=SOFT[:HARD]`` (go-units ``ParseUlimit``).

    The hard limit defaults to the soft one; ``-1`` (or ``infinity``) is unlimited.

    Args:
        value: E.g. ``"nofile=1024:2048"``, ``"core=-1"``.

    Returns:
        The limit, named as docker names it (see :data:`RLIMIT_NUMBERS`).

    Raises:
        InvalidArgument: Unknown name, malformed number, or soft above hard.
    """
    name, equals, limits = value.partition("=")
    if not equals:
        raise InvalidArgument(f"invalid ulimit argument: {value!r}")
    if name not in RLIMIT_NUMBERS:
        raise InvalidArgument(f"invalid ulimit type: {name!r}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise InvalidArgument(
            f"too many limit value arguments - {limits!r}, can only have up to two, `soft[:hard]`"
        )
    soft = _ulimit_value(parts[0], value)
    hard = _ulimit_value(parts[1], value) if len(parts) == 2 else soft
    if hard != -1 and (soft == -1 or soft > hard):
        shown = "-1 (unlimited)" if soft == -1 else str(soft)
        raise InvalidArgument(
            f"invalid ulimit {value!r}: soft limit must be less than or equal to hard limit: "
            f"soft: {shown}, hard: {hard}"
        )
    return Rlimit(type=name, soft=soft, hard=hard)


# --- capabilities -----------------------------------------------------------------------------

#: Every Linux capability, by name, to its bit number (up to CAP_CHECKPOINT_RESTORE, 40).
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

#: Docker's default capabilities, in moby's order; their mask is 0xa80425fb.
DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def parse_capability(name: str) -> str:
    """Normalise a ``--cap-add``/``--cap-drop`` name as Docker does.

    Case-insensitive, surrounding blanks ignored, the ``CAP_`` prefix optional; ``ALL`` is
    kept as ``ALL``.

    Args:
        name: E.g. ``"net_admin"``, ``"CAP_SYS_ADMIN"``, ``"all"``.

    Returns:
        ``CAP_NAME`` or ``ALL``.

    Raises:
        InvalidArgument: The capability is unknown.
    """
    normal = name.strip().upper()
    if normal == "ALL":
        return normal
    if not normal.startswith("CAP_"):
        normal = "CAP_" + normal
    if normal not in CAPABILITIES:
        raise InvalidArgument(f"unknown capability: {normal!r}")
    return normal


def capability_mask(names: Iterable[str]) -> int:
    """The capability bit mask of some capability names (``ALL`` is every capability).

    Args:
        names: Names as :func:`parse_capability` accepts them.

    Returns:
        The mask, e.g. ``0xa80425fb`` for :data:`DOCKER_DEFAULT_CAPS`.

    Raises:
        InvalidArgument: A capability is unknown.
    """
    mask = 0
    for name in names:
        normal = parse_capability(name)
        mask |= (1 << len(CAPABILITIES)) - 1 if normal == "ALL" else 1 << CAPABILITIES[normal]
    return mask


# --- signals ----------------------------------------------------------------------------------

_signal_numbers: dict[str, int] = {}


def parse_signal(value: str | int) -> int:
    """Parse a signal as Docker does: ``SIGTERM``, ``term``, ``RTMIN+3``, ``15``...

    Args:
        value: A name (case-insensitive, ``SIG`` optional) or a number.

    Returns:
        The signal number.

    Raises:
        InvalidArgument: The name is unknown or the number is not a signal.
    """
    import signal  # here: only the commands that take a signal pay for importing it

    if not _signal_numbers:
        for name, member in signal.Signals.__members__.items():
            _signal_numbers[name.removeprefix("SIG")] = int(member)
        for offset in range(1, 16):
            _signal_numbers[f"RTMIN+{offset}"] = signal.SIGRTMIN + offset
        for offset in range(1, 15):
            _signal_numbers[f"RTMAX-{offset}"] = signal.SIGRTMAX - offset
    if isinstance(value, int):
        number: int | None = value
    elif _is_digits(value):
        number = int(value)
    else:
        number = _signal_numbers.get(value.upper().removeprefix("SIG"))
    if number is None or not 1 <= number <= signal.SIGRTMAX:
        raise InvalidArgument(f"invalid signal: {value!r}")
    return number


def _port_range(text: str, what: str, value: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        raise InvalidArgument(f"invalid {what} port {text!r} in {value!r}")
    first, last = int(lo), int(hi) if sep else int(lo)
    if not 0 < first <= last < 65536:
        raise InvalidArgument(f"invalid {what} port {text!r} in {value!r}")
    return first, last


def parse_publish(value: str) -> tuple[PortMapping, ...]:
    """Docker's ``-p [[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/PROTO]``.

    A host port left out is chosen at each start (0 here); ``[::1]`` IPv6 host addresses are
    not supported (IPv4 only).

    Raises:
        InvalidArgument: A malformed mapping.
    """
    import ipaddress

    spec, _, proto = value.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid proto {proto!r} in {value!r}: tcp or udp")
    parts = spec.split(":")
    if len(parts) == 1:
        host_ip, host_text, container_text = "", "", parts[0]
    elif len(parts) == 2:
        host_ip, (host_text, container_text) = "", parts
    elif len(parts) == 3:
        host_ip, host_text, container_text = parts
    else:
        raise InvalidArgument(f"invalid port mapping {value!r} (IPv6 host addresses unsupported)")
    if host_ip:
        try:
            host_ip = str(ipaddress.IPv4Address(host_ip))
        except ValueError:
            raise InvalidArgument(f"invalid IP address {host_ip!r} in {value!r}") from None
    first, last = _port_range(container_text, "container", value)
    if host_text:
        hfirst, hlast = _port_range(host_text, "host", value)
        if hlast - hfirst != last - first:
            raise InvalidArgument(f"port ranges of different sizes in {value!r}")
    else:
        hfirst = hlast = 0
    return tuple(
        PortMapping(
            proto=proto,
            host_ip=host_ip or "0.0.0.0",
            host_port=hfirst + i if hfirst else 0,
            container_port=first + i,
        )
        for i in range(last - first + 1)
    )


def parse_add_host(value: str) -> str:
    """Docker's ``--add-host NAME:IP`` (or ``NAME=IP``): ``"NAME:IP"``, the address checked.

    Raises:
        InvalidArgument: No name, or a bad address.
    """
    import ipaddress

    name, sep, ip = value.partition("=") if "=" in value else value.partition(":")
    if not sep or not name or not ip:
        raise InvalidArgument(f"invalid argument {value!r} for --add-host: NAME:IP expected")
    ip = ip.strip("[]")
    if ip != "host-gateway":
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise InvalidArgument(f"invalid IP address in --add-host: {ip!r}") from None
    return f"{name}:{ip}"
