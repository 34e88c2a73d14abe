"""``kobako logs``: a container's output, its stdout on ours and its stderr on ours."""

from __future__ import annotations

import sys

from kobako.cli.args import BOOL, STRING, Command, Flag
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

_SINCE_USAGE = (
    'Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative '
    '(e.g. "42m" for 42 minutes)'
)
_UNTIL_USAGE = (
    'Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative '
    '(e.g. "42m" for 42 minutes)'
)
LOGS = Command(
    "kobako logs [OPTIONS] CONTAINER",
    "Fetch the logs of a container",
    (
        Flag("details", "", BOOL, "Show extra details provided to logs"),
        Flag("follow", "f", BOOL, "Follow log output"),
        Flag("since", "", STRING, _SINCE_USAGE),
        Flag(
            "tail", "n", STRING, "Number of lines to show from the end of the logs", default="all"
        ),
        Flag("timestamps", "t", BOOL, "Show timestamps"),
        Flag("until", "", STRING, _UNTIL_USAGE),
    ),
)


def main(argv: list[str], verb: str = "logs") -> int:
    """``kobako logs [OPTIONS] CONTAINER``."""
    from kobako.errors import InvalidArgument
    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore
    from kobako.runtime.logs import parse_tail, parse_time, read

    o = LOGS.parse(argv)  # flags anywhere on the line (``kobako logs web -f``), as cobra's
    args = o.args
    if len(args) != 1:
        fail(f'"kobako {verb}" requires exactly 1 argument.')
    times = {}
    for name in ("since", "until"):
        try:
            times[name] = parse_time(o.get_string(name))
        except InvalidArgument as e:
            raise InvalidArgument(f'invalid value for "{name}": {e}') from None
    store = Store.open()
    doc = ContainerStore(store).get(args[0])
    follow = o.get_bool("follow")
    timestamps = o.get_bool("timestamps")
    out, err = sys.stdout.buffer, sys.stderr.buffer
    last = out
    for entry in read(
        store,
        doc,
        since=times["since"],
        until=times["until"],
        tail=parse_tail(o.get_string("tail")),
        follow=follow,
    ):
        target = out if entry.stream == "stdout" else err
        if target is not last:  # keep the two streams' order where they meet (2>&1)
            last.flush()
            last = target
        target.write(entry.render(timestamps))
        if follow:
            target.flush()
    last.flush()
    return 0
