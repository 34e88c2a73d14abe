"""Detached containers: started under the native monitor, stopped, killed, restarted.

There is no daemon. A detached container is the child of its monitor (``rust/monitor``), a
small native process that keeps its log and writes its exit status to ``exit`` in the
container's directory. When the container ends, the monitor executes this module
(``python -m kobako.runtime.monitor ROOT ID``) in its own place: that *exit command* settles
the record (status, exit code, OOM kill, finish time), removes the cgroup and runtime files,
and then removes the container (``--rm``) or restarts it as its restart policy says, with
Docker's back-off (100 ms, doubling, at most a minute; reset after a run of 10 s or more).

Every change to a record is made under the container's lock, so the exit command, ``stop``
and ``start`` never undo each other's writes. A record is true without its writers: it holds
the container's and the monitor's pid with their start times and the boot id, and
:func:`kobako.runtime.containers.settle` reads a container whose processes are gone (killed,
or a reboot) as exited.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from kobako.errors import Conflict, ContainerNotFound, InvalidArgument
from kobako.runtime.containers import (
    ContainerStore,
    is_running,
    now_rfc3339,
    read_exit,
)
from kobako.runtime.parse import parse_signal
from kobako.runtime.proc import process_start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import Store
    from kobako.runtime.spec import Spec

__all__ = ["kill", "restart_policy", "start_detached", "stop", "wait_stopped"]

#: Docker's restart back-off: the first delay, the longest, and the run that resets it.
BACKOFF_START_MS = 100
BACKOFF_MAX_MS = 60_000
BACKOFF_RESET_S = 10.0

#: Environment passed to the exit command (the rest of ours is not its business).
_ENV_KEEP = ("PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LC_ALL")


def restart_policy(value: str) -> dict[str, Any]:
    """``--restart``'s value as Docker's ``HostConfig.RestartPolicy``.

    Raises:
        InvalidArgument: Not ``no``, ``always``, ``unless-stopped`` or ``on-failure[:N]``.
    """
    name, _, count = value.partition(":")
    if name in ("", "no", "always", "unless-stopped") and not count:
        return {"Name": name or "no", "MaximumRetryCount": 0}
    if name == "on-failure":
        if not count:
            return {"Name": name, "MaximumRetryCount": 0}
        if count.isdigit():
            return {"Name": name, "MaximumRetryCount": int(count)}
        raise InvalidArgument(
            f"invalid restart policy: maximum retry count must be an integer: {count}"
        )
    if count:
        raise InvalidArgument(
            f"invalid restart policy: maximum retry count cannot be used with '{name}'"
        )
    raise InvalidArgument(
        f"invalid restart policy '{name}': "
        "use one of 'no', 'always', 'on-failure' or 'unless-stopped'"
    )


def _exit_command(store: Store, cid: str) -> tuple[list[str], list[str]]:
    env = [f"{k}={v}" for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("KOBAKO_")]
    # -I: no current directory, user site or PYTHON* variables on the path of what runs as root
    return [sys.executable, "-I", "-m", "kobako.runtime.monitor", store.root, cid], env


def start_detached(
    store: Store,
    doc: dict[str, Any],
    spec: Spec,
    *,
    reset_count: bool = True,
    attach: list[Any] | None = None,
) -> dict[str, Any]:
    """Start a created or stopped container under its monitor; returns the saved record.

    ``reset_count``: a start by the user sets ``RestartCount`` back to 0, as Docker's does;
    a restart by the policy counts one more. With ``attach`` (a list), a socket connected to
    the monitor before the container started is appended to it (see :mod:`kobako.runtime.attach`).

    Raises:
        Conflict: It is already running.
        As :func:`kobako.runtime.lifecycle.start_detached` does; the record then says why.
    """
    from kobako.runtime import lifecycle

    containers = ContainerStore(store)
    cid = doc["Id"]
    base = containers.path(cid)
    log_path = os.path.join(base, "container.log")
    exit_path = os.path.join(base, "exit")
    command, env = _exit_command(store, cid)
    with containers.lock(cid):
        current = containers.load(cid)
        state = current["State"]
        by_policy = not reset_count and state.get("Status") == "restarting"
        if is_running(current) and not by_policy:
            raise Conflict(f"container {cid[:12]} is already running")
        if os.path.exists(exit_path):
            os.unlink(exit_path)
        try:
            from kobako.network import for_start

            spec = for_start(store, current, spec)
            started = lifecycle.start_detached(
                spec,
                log_path=log_path,
                exit_path=exit_path,
                exit_command=command,
                env=env,
                open_stdin=bool(current["Config"].get("OpenStdin")),
                attach=attach is not None,
            )
        except BaseException as e:
            state.update(
                Status="exited" if state.get("Status") != "created" else "created",
                Running=False,
                Restarting=False,
                Pid=0,
                ExitCode=getattr(e, "exit_code", 125),
                Error=str(e),
            )
            containers.save(current)
            raise
        now = now_rfc3339()
        state.update(
            Status="running",
            Running=True,
            Paused=False,
            Restarting=False,
            OOMKilled=False,
            Dead=False,
            Pid=started.pid,
            PidStart=started.pid_start,
            MonitorPid=started.monitor_pid,
            MonitorStart=started.monitor_start,
            BootId=started.boot_id,
            ExitCode=0,
            Error="",
            StartedAt=now,
            FinishedAt="0001-01-01T00:00:00Z",
            ManualStop=False,
            StartedMonotonic=time.time(),
        )
        if reset_count:
            current["RestartCount"] = 0
            state["BackoffMs"] = 0
        from kobako.network import running_settings

        running_settings(current, started.network)
        current["LogPath"] = log_path
        containers.save(current)
    if attach is not None and started.client is not None:
        attach.append(started.client)
    return current


def _should_restart(doc: dict[str, Any], code: int) -> bool:
    policy = (doc.get("HostConfig") or {}).get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if doc["State"].get("ManualStop") or name == "no":
        return False
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure" and code != 0:
        limit = policy.get("MaximumRetryCount") or 0
        return limit == 0 or doc.get("RestartCount", 0) < limit
    return False


def exited(store: Store, cid: str) -> None:
    """The exit command: settle the record of a container that has just ended, remove what
    it used, then remove it (``--rm``) or restart it (its restart policy)."""
    from kobako.errors import CgroupError
    from kobako.runtime import lifecycle
    from kobako.runtime.cgroups import Cgroup

    containers = ContainerStore(store)
    base = containers.path(cid)
    ended = read_exit(base)
    code, finished = ended if ended else (255, now_rfc3339())
    oom = False
    try:
        cgroup = Cgroup.find(cid)
        if cgroup is not None:
            oom = cgroup.oom_killed()
    except CgroupError:
        pass
    try:
        lock = containers.lock(cid)
    except ContainerNotFound:  # removed while it ran (or its whole store was)
        lifecycle.cleanup(cid)
        return
    with lock:
        try:
            doc = containers.load(cid)
        except ContainerNotFound:
            lifecycle.cleanup(cid)
            return
        state = doc["State"]
        if state.get("MonitorPid") != os.getpid():
            return  # the record has moved on (a newer start): not ours to settle
        lifecycle.cleanup(cid)
        ran_s = time.time() - float(state.get("StartedMonotonic") or 0)
        restart = not doc["HostConfig"].get("AutoRemove") and _should_restart(doc, code)
        state.update(
            Status="restarting" if restart else "exited",
            Running=restart,
            Restarting=restart,
            Paused=False,
            Pid=0,
            ExitCode=code,
            OOMKilled=oom,
            FinishedAt=finished,
        )
        from kobako.network import stopped_settings

        stopped_settings(doc)
        if restart:
            backoff = state.get("BackoffMs") or 0
            backoff = BACKOFF_START_MS if ran_s >= BACKOFF_RESET_S or not backoff else backoff * 2
            state["BackoffMs"] = min(backoff, BACKOFF_MAX_MS)
        containers.save(doc)
    if doc["HostConfig"].get("AutoRemove"):
        with contextlib.suppress(ContainerNotFound, Conflict):
            containers.remove(doc, volumes=True)
        return
    if not restart:
        return
    _sleep_unless_woken(state["BackoffMs"] / 1000)
    with containers.lock(cid):
        try:
            doc = containers.load(cid)
        except ContainerNotFound:
            return
        if doc["State"].get("Status") != "restarting" or doc["State"].get("ManualStop"):
            return
        doc["RestartCount"] = doc.get("RestartCount", 0) + 1
        containers.save(doc)
    spec = containers.spec(doc)
    try:
        start_detached(store, doc, spec, reset_count=False)
    except Exception:
        return  # the record says why


def _sleep_unless_woken(seconds: float) -> None:
    """Sleep, cut short by SIGUSR1 (what ``stop`` sends to a restart waiting out its back-off)."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    signal.sigtimedwait([signal.SIGUSR1], seconds)


def _pidfd(pid: int, start: str | None) -> int | None:
    """A pidfd for ``pid`` if it is still the process that started at ``start``."""
    if not pid or not start:
        return None
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    if process_start(pid) != start:  # checked after opening: the pidfd pins the process
        os.close(fd)
        return None
    return fd


def _wait_fd(fd: int, timeout: float | None) -> bool:
    """Wait until a pidfd's process exits; False on timeout."""
    import select

    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


def kill(store: Store, doc: dict[str, Any], sig: int | str = 9) -> None:
    """Send a signal to the container's main process (``docker kill``); a paused container is
    thawed first, and recorded as running again.

    Raises:
        Conflict: It is not running.
        InvalidArgument: No such signal.
    """
    import signal

    from kobako.runtime import observe

    number = parse_signal(sig)
    state = doc["State"]
    fd = _pidfd(state.get("Pid") or 0, state.get("PidStart"))
    if fd is None:
        raise Conflict(f"container {doc['Id'][:12]} is not running")
    try:
        observe.thaw(store, doc["Id"])  # a paused container takes the signal once thawed
        signal.pidfd_send_signal(fd, number)
    finally:
        os.close(fd)


def _mark_stopping(store: Store, cid: str) -> dict[str, Any]:
    containers = ContainerStore(store)
    with containers.lock(cid):
        doc = containers.load(cid)
        doc["State"]["ManualStop"] = True
        containers.save(doc)
    return doc


def stop(
    store: Store, doc: dict[str, Any], timeout: float | None = None, sig: str | None = None
) -> None:
    """Stop a container (``docker stop``): its stop signal, then SIGKILL after ``timeout``
    seconds (default 10); returns once its exit is recorded. A stopped one is left as it is;
    a paused one is thawed first.

    Its restart policy does not bring it back (until it is started again). A restart the
    policy had already begun when the stop came is stopped in turn.
    """
    from kobako.runtime import observe

    cid = doc["Id"]
    for _ in range(3):
        doc = _mark_stopping(store, cid)
        observe.thaw(store, cid)  # a paused container is thawed to take its stop signal
        _stop_once(doc, timeout, sig)
        _settle_now(store, cid)
        if not is_running(ContainerStore(store).get(cid)):
            return


def _stop_once(doc: dict[str, Any], timeout: float | None, sig: str | None) -> None:
    import signal

    state = doc["State"]
    monitor = _pidfd(state.get("MonitorPid") or 0, state.get("MonitorStart"))
    container = _pidfd(state.get("Pid") or 0, state.get("PidStart"))
    try:
        if container is not None:
            number = parse_signal(sig or doc["Config"].get("StopSignal") or "SIGTERM")
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(container, number)
            if not _wait_fd(container, 10.0 if timeout is None else max(timeout, 0)):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(container, signal.SIGKILL)
                _wait_fd(container, None)
        if monitor is not None:
            # The exit command records the end; one waiting out a restart back-off sees the
            # stop (ManualStop) when it wakes, so it is woken now.
            if state.get("Status") == "restarting":
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(monitor, signal.SIGUSR1)
            _wait_fd(monitor, 30.0)
    finally:
        for fd in (monitor, container):
            if fd is not None:
                os.close(fd)


def _settle_now(store: Store, cid: str) -> None:
    """Record as exited a container whose processes are gone but whose record says otherwise
    (its exit command was killed, or never ran), and remove what it left."""
    from kobako.runtime import lifecycle

    containers = ContainerStore(store)
    with containers.lock(cid):
        try:
            doc = containers.load(cid)
        except ContainerNotFound:
            return
        before = doc["State"].get("Status")
        settled = containers.settle(doc)
        if settled["State"]["Status"] != before:
            lifecycle.cleanup(cid)
            containers.save(settled)


def wait_stopped(store: Store, cid: str, timeout: float | None = None) -> dict[str, Any]:
    """Block until the container is not running; its settled record (for a container removed
    on its exit, ``--rm``, the last record read, which says how it ended if that was seen).

    Raises:
        TimeoutError: It still runs after ``timeout`` seconds.
        ContainerNotFound: It is gone and was never seen running.
    """
    containers = ContainerStore(store)
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        try:
            doc = containers.get(cid)
        except ContainerNotFound:
            if last is None:
                raise
            _exit_handled(last["State"])
            return last
        if not is_running(doc):
            if _exit_handled(doc["State"]):
                return doc
            try:  # its exit handler has finished: the record as it settled it
                return containers.get(cid)
            except ContainerNotFound:
                return doc
        last = doc
        state = doc["State"]
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"container {cid[:12]} still runs after {timeout} s")
        # the container's own end first: its exit is recorded (and read here) before the
        # exit command can remove it
        fd = _pidfd(state.get("Pid") or 0, state.get("PidStart"))
        fd_is_container = fd is not None
        if fd is None:
            fd = _pidfd(state.get("MonitorPid") or 0, state.get("MonitorStart"))
        if fd is None:
            time.sleep(0.02)
            continue
        try:
            ended = _wait_fd(fd, left if left is None else min(left, 1.0))
        finally:
            os.close(fd)
        if ended and fd_is_container:
            last = _ended(containers.path(cid), doc) or last


def _exit_handled(state: dict[str, Any], patience: float = 10.0) -> bool:
    """Wait (up to ``patience``) for the monitor's exit handler to finish settling the record
    and removing what the container used; True if there was none to wait for."""
    fd = _pidfd(state.get("MonitorPid") or 0, state.get("MonitorStart"))
    if fd is None:
        return True
    try:
        _wait_fd(fd, patience)
    finally:
        os.close(fd)
    return False


def _ended(base: str, doc: dict[str, Any], patience: float = 2.0) -> dict[str, Any] | None:
    """``doc`` as exited, once its monitor has written the exit file (it drains the output
    first); None if that does not come, or the directory is removed, within ``patience``."""
    import copy

    deadline = time.monotonic() + patience
    while time.monotonic() < deadline and os.path.isdir(base):
        ended = read_exit(base)
        if ended:
            done = copy.deepcopy(doc)
            code, finished = ended
            done["State"].update(
                Status="exited", Running=False, Pid=0, ExitCode=code, FinishedAt=finished
            )
            return done
        time.sleep(0.01)
    return None


def main(argv: list[str]) -> int:
    """``python -m kobako.runtime.monitor ROOT ID``: the exit command."""
    from kobako.image.store import Store

    if len(argv) != 2:
        print("usage: python -m kobako.runtime.monitor ROOT CONTAINER_ID", file=sys.stderr)
        return 2
    exited(Store(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
