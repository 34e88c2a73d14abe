"""Docker's flag parsing (spf13/pflag, as docker/cli sets it up), small enough to start fast.

A verb declares its flags in a table of :class:`Flag` and a :class:`Command` parses argv the
way ``docker run`` does: flags come first, and the first argument that is not a flag ends
them; it and everything after it are the verb's arguments, untouched (pflag's
``SetInterspersed(false)``). The spellings are pflag's:

=========================  ===========================================================
``--memory=512m``          the value attached
``--memory 512m``          the value is the next argument, whatever it looks like
``-m 512m``, ``-m512m``    a shorthand's value, separate or attached
``-m=512m``                a shorthand's value after ``=``
``-it``, ``-itu1000``      bool shorthands grouped; a value shorthand may end the group
``--rm``, ``--rm=false``   a bool flag takes a value only after ``=``
``--``                     ends the flags
=========================  ===========================================================

Every verb also has ``--help`` (and ``-h`` unless a flag uses it), as cobra adds it. Errors
are pflag's words, raised with :func:`kobako.cli.main.fail` (one line, exit status 125).
At run time this module imports no ``re``, ``argparse`` or ``typing``: each costs more start-up
time than a whole parse (``kobako run`` is meant to start within 2.5x of crun).
"""

from __future__ import annotations

from kobako.cli.main import Help, fail
from kobako.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn, TypeVar

    T = TypeVar("T")

#: Flag kinds, named as pflag's ``Value.Type()`` names them.
BOOL = "bool"
STRING = "string"
STRING_ARRAY = "stringArray"
INT = "int"

_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))
_DIGITS = "0123456789abcdef"
_SINGLE = "'"
_INT64_MAX = (1 << 63) - 1
_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"
}  # fmt: skip


class Flag:
    """One row of a verb's flag table (pflag's ``Flag``).

    Args:
        name: The long name, spelled ``--name``.
        short: The one-letter shorthand, spelled ``-s``, or ``""``.
        kind: :data:`BOOL`, :data:`STRING`, :data:`STRING_ARRAY` (repeatable) or :data:`INT`.
        usage: One line for ``--help``.
        default: The value when the flag is not given; default: the kind's zero value.
            String arrays always start empty.
        varname: The value's name in ``--help`` (docker shows ``list``, ``bytes``...);
            default: the kind's name.
        aliases: Other long names for the same flag, not shown in ``--help``.
    """

    __slots__ = ("aliases", "default", "kind", "name", "short", "usage", "varname")

    def __init__(
        self,
        name: str,
        short: str,
        kind: str,
        usage: str,
        *,
        default: bool | int | str | None = None,
        varname: str | None = None,
        aliases: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.short = short
        self.kind = kind
        self.usage = usage
        self.default = default
        self.varname = ("" if kind == BOOL else kind) if varname is None else varname
        self.aliases = aliases

    def display(self) -> str:
        """The flag as pflag names it in errors: ``-m, --memory`` or ``--rm``."""
        return f"-{self.short}, --{self.name}" if self.short else f"--{self.name}"


class Flags:
    """The parsed flags of one command line, looked up by long name (pflag's ``GetBool``...).

    Attributes:
        args: The arguments after the flags: the first non-flag argument and all that follow.
    """

    __slots__ = ("_arrays", "_bools", "_changed", "_flags", "_ints", "_strings", "args")

    def __init__(self, flags: Sequence[Flag]) -> None:
        self.args: list[str] = []
        self._flags = {flag.name: flag for flag in flags}
        self._changed: set[str] = set()
        self._bools: dict[str, bool] = {}
        self._strings: dict[str, str] = {}
        self._ints: dict[str, int] = {}
        self._arrays: dict[str, list[str]] = {}
        for flag in flags:
            default = flag.default
            if flag.kind == BOOL:
                self._bools[flag.name] = bool(default)
            elif flag.kind == INT:
                self._ints[flag.name] = int(default or 0)
            elif flag.kind == STRING_ARRAY:
                self._arrays[flag.name] = []
            else:
                self._strings[flag.name] = str(default or "")

    def changed(self, name: str) -> bool:
        """Whether the flag was given on the command line."""
        return name in self._changed

    def get_bool(self, name: str) -> bool:
        """A bool flag's value."""
        return self._bools[name]

    def get_int(self, name: str) -> int:
        """An int flag's value."""
        return self._ints[name]

    def get_string(self, name: str) -> str:
        """A string flag's value."""
        return self._strings[name]

    def get_strings(self, name: str) -> list[str]:
        """A string-array flag's values, in command-line order."""
        return self._arrays[name]

    def parsed(self, name: str, parse: Callable[[str], T]) -> T | None:
        """A string flag's value through ``parse``, or None if the flag was not given.

        Raises:
            UsageError: ``parse`` raised :class:`~kobako.errors.InvalidArgument`.
        """
        if name not in self._changed:
            return None
        return convert(self._flags[name].display(), self._strings[name], parse)

    def each(self, name: str, parse: Callable[[str], T]) -> list[T]:
        """A string-array flag's values, each through ``parse``.

        Raises:
            UsageError: ``parse`` raised :class:`~kobako.errors.InvalidArgument`.
        """
        flag = self._flags[name].display()
        return [convert(flag, value, parse) for value in self._arrays[name]]

    def set(self, flag: Flag, value: str) -> None:
        """Set ``flag`` from its text as pflag's ``FlagSet.Set`` does; arrays append.

        Raises:
            UsageError: Not a bool or int, in pflag's words.
        """
        name = flag.name
        if flag.kind == BOOL:
            if value not in _TRUE and value not in _FALSE:
                _invalid(flag, value, f"strconv.ParseBool: parsing {quote(value)}: invalid syntax")
            self._bools[name] = value in _TRUE
        elif flag.kind == INT:
            self._ints[name] = _parse_int(flag, value)
        elif flag.kind == STRING_ARRAY:
            self._arrays[name].append(value)
        else:
            self._strings[name] = value
        self._changed.add(name)


class Command:
    """A verb: its usage line, its one-line description and its flag table.

    Args:
        use: The usage line, e.g. ``kobako run [OPTIONS] ROOTFS COMMAND [ARG...]``.
        short: What the verb does, in one line.
        flags: The flag table; ``--help`` is added.
        interspersed: Flags may come after arguments (``save busybox -o x.tar``), as cobra
            parses most of docker's verbs; ``run``, ``create``, ``exec`` and ``top`` turn this
            off, so that what follows the image or container is the command's own.
    """

    __slots__ = ("_long", "_short", "flags", "interspersed", "short", "use")

    def __init__(
        self, use: str, short: str, flags: Sequence[Flag], *, interspersed: bool = True
    ) -> None:
        self.use = use
        self.short = short
        self.interspersed = interspersed
        shorts = {flag.short for flag in flags}
        self.flags = (*flags, Flag("help", "" if "h" in shorts else "h", BOOL, "Print usage"))
        self._long = {name: f for f in self.flags for name in (f.name, *f.aliases)}
        self._short = {f.short: f for f in self.flags if f.short}

    def parse(self, argv: Sequence[str]) -> Flags:
        """Parse ``argv`` (the words after the verb) as pflag does.

        Returns:
            The flags, and in :attr:`Flags.args` the arguments: with interspersing off, the
            first non-flag argument and all after it.

        Raises:
            UsageError: An unknown flag, a missing value or a bad bool or int (one line).
            Help: ``--help`` was given; it carries the usage to print.
        """
        flags = Flags(self.flags)
        args: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if len(arg) < 2 or arg[0] != "-":
                if self.interspersed:
                    args.append(arg)
                    continue
                args += argv[i - 1 :]
                break
            if arg == "--":
                args += argv[i:]
                break
            if arg[1] == "-":
                i = self._parse_long(flags, arg, argv, i)
            else:
                i = self._parse_shorts(flags, arg, argv, i)
        flags.args = args
        if flags.get_bool("help"):
            raise Help(self.usage())
        return flags

    def _parse_long(self, flags: Flags, arg: str, argv: Sequence[str], i: int) -> int:
        if arg[2] in "-=":
            fail(f"bad flag syntax: {arg}")
        name, eq, value = arg[2:].partition("=")
        flag = self._long.get(name)
        if flag is None:
            fail(f"unknown flag: --{name}")
        if not eq:
            if flag.kind == BOOL:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                fail(f"flag needs an argument: {arg}")
        flags.set(flag, value)
        return i

    def _parse_shorts(self, flags: Flags, arg: str, argv: Sequence[str], i: int) -> int:
        group = arg[1:]
        while group:
            letter, rest = group[0], group[1:]
            flag = self._short.get(letter)
            if flag is None:
                fail(f"unknown shorthand flag: {quote(letter, _SINGLE)} in -{group}")
            if len(group) > 2 and group[1] == "=":
                value, rest = group[2:], ""
            elif flag.kind == BOOL:
                value = "true"
            elif rest:
                value, rest = rest, ""
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                fail(f"flag needs an argument: {quote(letter, _SINGLE)} in -{group}")
            flags.set(flag, value)
            group = rest
        return i

    def usage(self) -> str:
        """The verb's ``--help``: usage line, description and the flags, as docker prints them."""
        rows: list[tuple[str, str]] = []
        for flag in sorted(self.flags, key=lambda f: f.name):
            left = f"  -{flag.short}, --{flag.name}" if flag.short else f"      --{flag.name}"
            if flag.varname:
                left += " " + flag.varname
            right = flag.usage
            if flag.default:  # Go prints a bool as true, a string quoted
                default = str(flag.default)
                right += f" (default {quote(default) if flag.kind == STRING else default.lower()})"
            rows.append((left, right))
        width = max(len(left) for left, _ in rows)
        table = "".join(f"{left.ljust(width)}   {right}\n" for left, right in rows)
        return f"Usage:  {self.use}\n\n{self.short}\n\nOptions:\n{table}"


def convert(flag: str, value: str, parse: Callable[[str], T]) -> T:
    """Parse a flag's value; a bad one becomes docker's 'invalid argument' line.

    Args:
        flag: The flag as pflag names it in errors (:meth:`Flag.display`).
        value: The value as given.
        parse: Parses the value; raises :class:`~kobako.errors.InvalidArgument` if bad.

    Raises:
        UsageError: ``invalid argument "VALUE" for "FLAG" flag: REASON``.
    """
    try:
        return parse(value)
    except InvalidArgument as e:
        fail(f"invalid argument {quote(value)} for {quote(flag)} flag: {e}")


def key_values(items: list[str], what: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` flags (``--label``, ``--opt``) as a mapping; ``KEY`` alone is an
    empty value.

    Raises:
        InvalidArgument: An item with an empty key.
    """
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what} {item!r}: empty key")
        out[key] = value
    return out


def parse_filters(values: list[str], allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """``--filter KEY=VALUE`` flags by key (``label!=KEY``: ``label`` with ``"!KEY"``).

    Raises:
        InvalidArgument: No ``=``, or a key not in ``allowed``.
    """
    out: dict[str, list[str]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidArgument("bad format of filter (expected name=value)")
        key = key.strip().lower()
        if key.endswith("!"):  # label!=KEY: those that must not have it
            key, value = key[:-1], "!" + value
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")
        out.setdefault(key, []).append(value.strip())
    return out


def quote(text: str, mark: str = '"') -> str:
    """``text`` quoted as Go's ``%q`` quotes it, so a value never breaks the error's line."""
    out = [mark]
    for char in text:
        code = ord(char)
        if char in (mark, "\\"):
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x80 or 0xDC80 <= code < 0xDD00:  # control, or a byte that is not UTF-8
            out.append(f"\\x{code & 0xFF:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    out.append(mark)
    return "".join(out)


def _invalid(flag: Flag, value: str, reason: str) -> NoReturn:
    fail(f"invalid argument {quote(value)} for {quote(flag.display())} flag: {reason}")


def _parse_int(flag: Flag, text: str) -> int:
    """Go's ``strconv.ParseInt(text, 0, 64)``, as pflag's int flags parse their values."""
    body = text[1:] if text[:1] in ("+", "-") else text
    base, digits = 10, body
    if len(body) > 2 and body[0] == "0" and body[1] in "bBoOxX":
        base, digits = {"b": 2, "o": 8, "x": 16}[body[1].lower()], body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]  # a leading 0 means octal, as in Go source
    clean = digits.replace("_", "")
    # underscores only between digits, or after the base prefix (Go's underscoreOK)
    misplaced = digits.endswith("_") or "__" in digits or (base == 10 and digits[:1] == "_")
    if not clean or clean.lower().strip(_DIGITS[:base]) or ("_" in digits and misplaced):
        _invalid(flag, text, f"strconv.ParseInt: parsing {quote(text)}: invalid syntax")
    value = int(clean, base) * (-1 if text[0] == "-" else 1)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        _invalid(flag, text, f"strconv.ParseInt: parsing {quote(text)}: value out of range")
    return value
