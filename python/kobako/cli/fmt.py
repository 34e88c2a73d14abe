"""Output as docker's CLI prints it: sizes, durations, aligned tables, ``--format`` templates.

The pieces docker's list commands are made of, each matching what docker prints:

- :func:`human_size` is go-units' ``HumanSizeWithPrecision`` (decimal units: ``4.26MB``).
- :func:`human_duration` is go-units' ``HumanDuration`` (``About a minute``, ``2 hours``).
- :func:`tabwrite` is Go's ``text/tabwriter`` as docker sets it up (minimum width 10,
  padding 3): a column is as wide as its widest cell, the last cell of a line is not padded.
- :class:`Template` is the part of Go's ``text/template`` that ``--format`` strings use:
  ``{{.Field.Sub}}``, ``{{json .}}``, ``{{join .List ","}}``, pipelines, ``{{if}}``,
  ``{{else}}``, ``{{range}}``, ``{{end}}`` and the ``{{-``/``-}}`` trim markers.
- :func:`write_list` puts them together as docker's ``formatter.Context`` does: ``table ...``
  formats become aligned tables with a header row, ``json`` one JSON object per line, any
  other template one rendered line per row.
"""

from __future__ import annotations

import sys

from kobako.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, TextIO

    #: A parsed node: ("text", str), ("action", pipeline), ("if"|"range", pipeline, body, else)
    _Node = tuple[Any, ...]

__all__ = [
    "Template",
    "container_status",
    "ellipsis",
    "go_json",
    "human_duration",
    "human_duration_since",
    "human_size",
    "parse_time",
    "print_table",
    "render_template",
    "tabwrite",
    "write_list",
]

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")

#: docker's tables: ``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)``.
MIN_WIDTH = 10
PADDING = 3


# -- sizes and times --------------------------------------------------------------------


def human_size(size: float, precision: int = 4) -> str:
    """A byte count in decimal units, as go-units' ``HumanSizeWithPrecision`` writes it.

    Args:
        size: Bytes.
        precision: Significant digits: docker uses 4 (``HumanSize``) for totals and 3 for
            the SIZE column of ``images``, ``history`` and ``ps``.

    Example:
        >>> human_size(4_261_000, 3), human_size(0), human_size(1_234_567_890)
        ('4.26MB', '0B', '1.235GB')
    """
    i = 0
    while size >= 1000.0 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{_UNITS[i]}"


def human_duration(seconds: float) -> str:
    """A duration as go-units' ``HumanDuration`` writes it (``"About a minute"``).

    Example:
        >>> human_duration(47), human_duration(60), human_duration(5400)
        ('47 seconds', 'About a minute', '2 hours')
    """
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = secs // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # Go's math.Round: half away from zero
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def parse_time(timestamp: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (``2024-05-01T10:00:00.123456789Z``).

    Returns:
        The time, or None if ``timestamp`` is empty, malformed, or Go's zero time
        (``0001-01-01T00:00:00Z``, which docker writes for "never").
    """
    if not timestamp or timestamp.startswith("0001-01-01"):
        return None
    from datetime import UTC, datetime

    text = timestamp.replace("z", "Z")
    dot = text.find(".")
    if dot >= 0:  # Python takes at most 6 fractional digits; Go writes up to 9
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        text = text[:dot] + text[dot : min(end, dot + 7)] + text[end:]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def human_duration_since(timestamp: str) -> str:
    """How long ago an RFC 3339 time was, as docker's lists say it (``"2 hours ago"``).

    Returns:
        ``"<duration> ago"``, or ``""`` if the time is unknown (see :func:`parse_time`).
    """
    import time

    when = parse_time(timestamp)
    if when is None:
        return ""
    return human_duration(time.time() - when) + " ago"


def ellipsis(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` if cut (docker's Ellipsis)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return text[0]
    return text[: width - 1] + "…"


def container_status(doc: dict[str, Any]) -> str:
    """A container's STATUS as ``docker ps`` shows it (``Up 2 minutes``, ``Exited (0) …``)."""
    state = doc["State"]
    status = state.get("Status")
    if status == "exited":
        since = human_duration_since(state.get("FinishedAt", ""))
        return f"Exited ({state.get('ExitCode', 0)}) {since}".rstrip()
    up = f"Up {human_duration_since(state.get('StartedAt', '')).removesuffix(' ago')}"
    if status == "running":
        return up
    if status == "paused":
        return f"{up} (Paused)"
    if status == "restarting":
        since = human_duration_since(state.get("FinishedAt", ""))
        return f"Restarting ({state.get('ExitCode', 0)}) {since}".rstrip()
    return str(status).capitalize()


# -- JSON -------------------------------------------------------------------------------


def go_json(
    value: Any, *, sort_keys: bool = True, indent: int | None = None, escape_html: bool = True
) -> str:
    """JSON as Go's ``json.Marshal`` writes it (``--format json``, ``inspect``).

    Args:
        value: The value.
        sort_keys: Go sorts the keys of a map (docker's list rows are maps); a struct
            (an inspect document) keeps its fields' order.
        indent: Indent by this many spaces (``json.MarshalIndent``); one line if None.
        escape_html: Go writes ``<``, ``>`` and ``&`` as ``\\u003c``... (``<none>`` appears
            as ``\\u003cnone\\u003e`` in ``docker images --format json``).
    """
    import json

    separators = (",", ": ") if indent is not None else (",", ":")
    text = json.dumps(
        value, sort_keys=sort_keys, indent=indent, separators=separators, ensure_ascii=False
    )
    if escape_html:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# -- tables -----------------------------------------------------------------------------


def tabwrite(text: str, *, min_width: int = MIN_WIDTH, padding: int = PADDING) -> str:
    """Align tab-separated cells as Go's ``text/tabwriter`` does (docker's settings).

    A cell is text ended by a tab; consecutive lines that have a cell in a column form a
    block whose cells are padded with spaces to the block's widest cell plus ``padding``
    (at least ``min_width``). The text after a line's last tab is not padded.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    _tab_block(lines, 0, len(lines), [], min_width, padding, out)
    return "\n".join(out)


def _tab_block(
    lines: list[list[str]],
    start: int,
    end: int,
    widths: list[int],
    min_width: int,
    padding: int,
    out: list[str],
) -> None:
    column = len(widths)
    this = start
    while this < end:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        _tab_flush(lines, start, this, widths, out)
        start = this
        width = min_width
        while this < end and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + padding)
            this += 1
        _tab_block(lines, start, this, [*widths, width], min_width, padding, out)
        start = this
    _tab_flush(lines, start, end, widths, out)


def _tab_flush(
    lines: list[list[str]], start: int, end: int, widths: list[int], out: list[str]
) -> None:
    for cells in lines[start:end]:
        out.append(
            "".join(
                cell.ljust(widths[j]) if j < len(widths) else cell for j, cell in enumerate(cells)
            )
        )


def print_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], file: TextIO | None = None
) -> None:
    """Print a header and rows as an aligned table, as docker's default ``table`` formats."""
    lines = ["\t".join(header), *("\t".join(row) for row in rows)]
    (file or sys.stdout).write(tabwrite("\n".join(lines) + "\n"))


def write_list(
    format: str,
    rows: Sequence[dict[str, Any]],
    *,
    default: str,
    headers: dict[str, str],
    file: TextIO | None = None,
) -> None:
    """Print rows as docker's ``formatter.Context`` does with a ``--format`` value.

    Args:
        format: ``""`` or ``"table"`` (the default table), ``"json"`` (one JSON object per
            row, keys sorted), ``"table TEMPLATE"`` (a table with a header row) or any other
            Go template (one rendered line per row). ``\\t`` and ``\\n`` written as two
            characters become a tab and a newline, as docker replaces them.
        rows: The rows: field name → value.
        default: The default table format, e.g. ``"table {{.ID}}\\t{{.Size}}"``.
        headers: Field name → column header (``"ID"`` → ``"IMAGE ID"``).
        file: Where to print; default: standard output.

    Raises:
        InvalidArgument: The template is malformed or names a field the rows lack.
    """
    out = file or sys.stdout
    if format == "json":
        out.write("".join(go_json(row) + "\n" for row in rows))
        return
    if not format or format == "table":
        format = default
    table = format.startswith("table")
    body = format[len("table") :] if table else format
    body = body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    template = Template(body)
    lines = [template.render(row, strict=True) for row in rows]
    if not table:
        out.write("".join(line + "\n" for line in lines))
        return
    try:  # docker ignores a header that does not render (a nested field, say)
        header = template.render({key: headers.get(key, "") for key in template.fields()})
    except InvalidArgument:
        header = ""
    out.write(tabwrite("\n".join([header, *lines]) + "\n"))


# -- templates --------------------------------------------------------------------------


def print_inspect(docs: list[dict[str, Any]], template: str) -> None:
    """What ``inspect`` prints: ``template`` rendered per document, else a JSON array."""
    if template:
        for doc in docs:
            print(render_template(template, doc))
    else:
        print(go_json(docs, sort_keys=False, indent=4))


def render_template(template: str, value: Any) -> str:
    """Render a Go template against ``value`` (``docker inspect --format``).

    Raises:
        InvalidArgument: The template is malformed or cannot be executed on ``value``.
    """
    return Template(template).render(value)


class _Missing:
    """A map key that is not there (Go prints it as ``<no value>``)."""

    __slots__ = ()


_MISSING = _Missing()


def _go_str(value: Any, nested: bool = False) -> str:
    """A value as Go's ``fmt`` prints it with ``%v`` (what ``{{.Field}}`` shows)."""
    if value is _MISSING or (value is None and not nested):
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_str(v, True) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "map[" + " ".join(f"{k}:{_go_str(v, True)}" for k, v in items) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is _MISSING or value is None:
        return False
    if isinstance(value, bool | int | float | str | list | tuple | dict):
        return bool(value)
    return True


def _fn_json(value: Any) -> str:
    import json

    return json.dumps(
        None if value is _MISSING else value, ensure_ascii=False, separators=(",", ":")
    )


def _fn_join(value: Any, sep: Any) -> str:
    if not isinstance(value, list | tuple):
        raise InvalidArgument("template: join: expected a list")
    return str(sep).join(_go_str(v, True) for v in value)


def _fn_split(value: Any, sep: Any) -> list[str]:
    return str(value).split(str(sep))


def _fn_index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, _MISSING)
        elif isinstance(value, list | tuple) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            raise InvalidArgument(f"template: index: cannot index {_go_str(value)} with {key!r}")
    return value


def _fn_len(value: Any) -> int:
    if not isinstance(value, str | list | tuple | dict):
        raise InvalidArgument("template: len: value has no length")
    return len(value)


def _fn_truncate(value: Any, n: Any) -> str:
    return str(value)[: int(n)]


def _fn_pad(value: Any, left: Any, right: Any) -> str:
    return " " * int(left) + _go_str(value) + " " * int(right)


_FUNCS: dict[str, Callable[..., Any]] = {
    "json": _fn_json,
    "join": _fn_join,
    "split": _fn_split,
    "index": _fn_index,
    "len": _fn_len,
    "lower": lambda v: _go_str(v).lower(),
    "upper": lambda v: _go_str(v).upper(),
    "title": lambda v: _go_str(v).title(),
    "truncate": _fn_truncate,
    "pad": _fn_pad,
    "println": lambda *v: " ".join(_go_str(x) for x in v) + "\n",
}


class Template:
    """A Go ``text/template``, as far as docker's ``--format`` strings go.

    Args:
        text: The template, e.g. ``"{{.Repository}}:{{.Tag}}"``.

    Raises:
        InvalidArgument: It is malformed or uses what this subset lacks (``template
            parsing error: …``).

    Example:
        >>> Template("{{.Config.Cmd}} {{json .Config.Cmd}}").render({"Config": {"Cmd": ["sh"]}})
        '[sh] ["sh"]'
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._fields: list[str] = []
        tokens = self._lex(text)
        nodes, stop = self._parse(tokens, 0, ())
        if stop < len(tokens):
            raise self._error(f"unexpected {{{{{tokens[stop][1]}}}}}")
        self._nodes = nodes

    def fields(self) -> list[str]:
        """The top-level fields the template names (``{{.Size}}`` → ``"Size"``), in order."""
        return list(dict.fromkeys(self._fields))

    def render(self, value: Any, *, strict: bool = False) -> str:
        """Execute the template on ``value`` (a dict, list or scalar: decoded JSON).

        Args:
            value: What ``.`` is.
            strict: A field the dict lacks is an error (docker's list rows are structs);
                otherwise it prints as ``<no value>``, as a Go map's missing key does.

        Raises:
            InvalidArgument: A field cannot be evaluated, or a function fails.
        """
        out: list[str] = []
        self._exec(self._nodes, value, strict, out)
        return "".join(out)

    # -- lexing and parsing -------------------------------------------------------------

    def _error(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"template parsing error: {why} in {self.text!r}")

    def _lex(self, text: str) -> list[tuple[str, str]]:
        """The template as ("text", …) and ("action", …) pieces, trim markers applied."""
        pieces: list[tuple[str, str]] = []
        pos = 0
        trim_next = False
        while True:
            start = text.find("{{", pos)
            chunk = text[pos:] if start < 0 else text[pos:start]
            if trim_next:
                chunk = chunk.lstrip(" \t\r\n")
            if start < 0:
                if chunk:
                    pieces.append(("text", chunk))
                return pieces
            inner_start = start + 2
            if text.startswith("- ", inner_start) or text.startswith("-\t", inner_start):
                chunk = chunk.rstrip(" \t\r\n")
                inner_start += 1
            if chunk:
                pieces.append(("text", chunk))
            end = self._action_end(text, inner_start)
            inner = text[inner_start:end]
            trim_next = inner.endswith((" -", "\t-"))
            if trim_next:
                inner = inner[:-1]
            pieces.append(("action", inner.strip()))
            pos = end + 2

    def _action_end(self, text: str, pos: int) -> int:
        """Where the action that starts at ``pos`` ends (``}}`` outside a string)."""
        quote = ""
        while pos < len(text):
            c = text[pos]
            if quote:
                if c == "\\" and quote == '"':
                    pos += 1
                elif c == quote:
                    quote = ""
            elif c in '"`':
                quote = c
            elif text.startswith("}}", pos):
                return pos
            pos += 1
        raise self._error("unclosed action")

    def _parse(
        self, pieces: list[tuple[str, str]], i: int, stops: tuple[str, ...]
    ) -> tuple[list[_Node], int]:
        """Nodes from ``pieces[i:]`` up to an action in ``stops`` (its index is returned)."""
        nodes: list[_Node] = []
        while i < len(pieces):
            kind, body = pieces[i]
            if kind == "text":
                nodes.append(("text", body))
                i += 1
                continue
            word = body.split(None, 1)[0] if body else ""
            if word in stops:
                return nodes, i
            if word in ("if", "range"):
                pipeline = self._pipeline(body[len(word) :])
                then, i = self._parse(pieces, i + 1, ("else", "end"))
                other: list[_Node] = []
                if i < len(pieces) and pieces[i][1] == "else":
                    other, i = self._parse(pieces, i + 1, ("end",))
                if i >= len(pieces) or pieces[i][1] != "end":
                    raise self._error(f"unexpected EOF: {{{{{word}}}}} without {{{{end}}}}")
                nodes.append((word, pipeline, then, other))
                i += 1
                continue
            if word in ("else", "end"):
                raise self._error(f"unexpected {{{{{body}}}}}")
            if word in ("with", "define", "template", "block") or word.startswith("$"):
                raise self._error(f"{{{{{word}}}}} is not supported")
            if body.startswith("/*"):
                i += 1
                continue
            nodes.append(("action", self._pipeline(body)))
            i += 1
        return nodes, i

    def _pipeline(self, text: str) -> list[list[tuple[str, Any]]]:
        """``cmd | cmd ...``: each command a list of (kind, value) operands."""
        commands: list[list[tuple[str, Any]]] = [[]]
        for token in self._tokens(text):
            if token == "|":
                commands.append([])
            elif token.startswith('"'):
                import json

                try:
                    commands[-1].append(("lit", json.loads(token)))
                except ValueError:
                    raise self._error(f"bad string {token}") from None
            elif token.startswith("`"):
                commands[-1].append(("lit", token[1:-1]))
            elif token == "." or token.startswith("."):
                path = [p for p in token.split(".") if p]
                if path:
                    self._fields.append(path[0])
                commands[-1].append(("field", path))
            elif token.lstrip("-").isdigit():
                commands[-1].append(("lit", int(token)))
            elif token in ("true", "false"):
                commands[-1].append(("lit", token == "true"))
            elif token in _FUNCS:
                commands[-1].append(("func", token))
            else:
                raise self._error(f'function "{token}" not defined')
        if any(not command for command in commands):
            raise self._error("missing value for command")
        for command in commands:
            if len(command) > 1 and command[0][0] != "func":
                raise self._error(f"can't give argument to non-function {_show(command[0])}")
        return commands

    def _tokens(self, text: str) -> list[str]:
        tokens: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c in " \t\r\n":
                i += 1
            elif c == "|":
                tokens.append("|")
                i += 1
            elif c in '"`':
                j = i + 1
                while j < len(text) and text[j] != c:
                    j += 2 if c == '"' and text[j] == "\\" else 1
                if j >= len(text):
                    raise self._error("unterminated quoted string")
                tokens.append(text[i : j + 1])
                i = j + 1
            else:
                j = i
                while j < len(text) and text[j] not in " \t\r\n|":
                    j += 1
                tokens.append(text[i:j])
                i = j
        return tokens

    # -- execution ----------------------------------------------------------------------

    def _exec(self, nodes: list[_Node], dot: Any, strict: bool, out: list[str]) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                out.append(_go_str(self._eval(node[1], dot, strict)))
            elif kind == "if":
                branch = node[2] if _truthy(self._eval(node[1], dot, strict)) else node[3]
                self._exec(branch, dot, strict, out)
            else:  # range
                items = self._eval(node[1], dot, strict)
                if isinstance(items, dict):
                    items = [items[k] for k in sorted(items)]
                elif items is _MISSING or items is None:
                    items = []
                elif not isinstance(items, list | tuple):
                    raise InvalidArgument(f"template: range can't iterate over {_go_str(items)}")
                for item in items:
                    self._exec(node[2], item, strict, out)
                if not items:
                    self._exec(node[3], dot, strict, out)

    def _eval(self, pipeline: list[list[tuple[str, Any]]], dot: Any, strict: bool) -> Any:
        result: Any = _MISSING
        for n, command in enumerate(pipeline):
            args = [self._operand(op, dot, strict) for op in command[1:]]
            if n:
                args.append(result)
            head = command[0]
            if head[0] == "func":
                result = _FUNCS[head[1]](*args)
            else:
                if n:
                    raise self._error(f"can't give argument to non-function {_show(head)}")
                result = self._operand(head, dot, strict)
        return result

    def _operand(self, op: tuple[str, Any], dot: Any, strict: bool) -> Any:
        kind, value = op
        if kind == "lit":
            return value
        if kind == "func":
            return _FUNCS[value]()
        for name in value:
            if isinstance(dot, dict):
                if name not in dot and strict:
                    raise InvalidArgument(
                        f"template: executing at <.{'.'.join(value)}>: can't evaluate field {name}"
                    )
                dot = dot.get(name, _MISSING)
            elif dot is _MISSING or dot is None:
                return _MISSING
            else:
                raise InvalidArgument(
                    f"template: executing at <.{'.'.join(value)}>: can't evaluate field {name} "
                    f"in type {type(dot).__name__}"
                )
        return dot


def _show(op: tuple[str, Any]) -> str:
    kind, value = op
    if kind == "field":
        return "." + ".".join(value)
    return repr(value)


def join_host_port(binding: dict[str, str]) -> str:
    """Go's ``net.JoinHostPort`` of a port binding (``HostIp``, ``HostPort``): an IPv6 host
    in brackets."""
    host, port = binding.get("HostIp", ""), binding.get("HostPort", "")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ports_column(ports: dict[str, list[dict[str, str]] | None]) -> str:
    """docker ps's PORTS: ``127.0.0.1:8080->80/tcp, 53/udp`` (a port exposed but not
    published shows alone), sorted as docker sorts them."""
    out = []
    for key, bindings in ports.items():
        if not bindings:
            out.append(key)
            continue
        for b in bindings:
            host = join_host_port({**b, "HostIp": b.get("HostIp") or "0.0.0.0"})
            out.append(f"{host}->{key}")
    return ", ".join(sorted(out))
