"""Run a container to completion: cgroup, clone, wait, report, clean up.

:func:`run` is the runtime layer's one call: it creates the container's cgroup, has the
native core clone the process into its namespaces, forwards SIGINT/SIGTERM/SIGHUP to it,
waits, and removes everything it made (cgroup, per-container files), whatever happens.
"""

from __future__ import annotations

import os
import time

from kobako import _native
from kobako._record import Record
from kobako.errors import CgroupError, InvalidArgument
from kobako.runtime import launch
from kobako.runtime.cgroups import Cgroup, CgroupStats, remove_idle
from kobako.runtime.proc import boot_id, process_start
from kobako.runtime.spec import IdMap, Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    import socket
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    from kobako.runtime.tty import Pty
else:
    # The signal module is _signal (always loaded: the interpreter installs its handlers at
    # start-up) wrapped in enums; importing enum would be a third of the CLI's start-up time.
    import _signal

__all__ = ["Exit", "Started", "attach_path", "cleanup", "run", "start_detached"]

#: Where per-container runtime files live (hostname, hosts, resolv.conf).
RUN_DIR = os.environ.get("KOBAKO_RUN_DIR", "/run/kobako")
#: Where compiled seccomp programs are cached between CLI runs.
CACHE_DIR = os.path.join(RUN_DIR, "cache")

_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


class Exit(Record):
    """How a container ended.

    Attributes:
        status: The exit status as docker reports it: the code, or 128+N for signal N.
        oom_killed: The kernel's OOM killer killed a process of the container.
        stats: Resource usage read from its cgroup just before it was removed.
        id: The container id.
    """

    status: int
    oom_killed: bool
    stats: CgroupStats
    id: str


class Started(Record):
    """A detached container, running under its monitor.

    Attributes:
        pid: The container's first process (on the host).
        pid_start: Its start time (``/proc/PID/stat`` field 22): with the pid, it names the
            process even after its pid is reused.
        monitor_pid: Its monitor; ``monitor_start`` likewise.
        boot_id: The kernel's boot id when they started (a start time is per boot).
        client: A socket connected to the monitor's attach socket, if one was asked for.
        network: Docker's ``NetworkSettings`` of its networks (None without one).
    """

    pid: int
    pid_start: str
    monitor_pid: int
    monitor_start: str
    boot_id: str
    client: socket.socket | None = None
    network: dict[str, Any] | None = None


def _host_id(idmap: tuple[IdMap, ...]) -> int:
    """The host id that container id 0 maps to (-1: leave unchanged)."""
    for m in idmap:
        if m.container_id == 0:
            return m.host_id
    return -1


def _decode(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class _SignalForwarder:
    """Pass SIGINT, SIGTERM and SIGHUP on to the container while it runs.

    Installed before the container starts, so that a signal arriving while it starts is not
    lost (nor kills us, leaving it behind): it is held until the pid is known.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.saved: dict[int, Any] = {}
        self.wakeup_r = self.wakeup_w = self.saved_wakeup = -1

    def __enter__(self) -> _SignalForwarder:
        try:
            for sig in _FORWARDED:
                self.saved[sig] = _signal.signal(sig, self._handle)
        except ValueError:  # not the main thread, which alone receives signals
            return self
        # A signal whose C-level handler runs just before we block in a system call would
        # have its Python handler deferred until that call returns: the wakeup fd makes the
        # wait return instead (see wait()).
        self.wakeup_r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wakeup_w = w
        self.saved_wakeup = _signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            _signal.signal(sig, handler)
        if self.wakeup_r >= 0:
            _signal.set_wakeup_fd(self.saved_wakeup)
            os.close(self.wakeup_r)
            os.close(self.wakeup_w)

    def wait(self, pid: int, pidfd: int) -> int:
        """waitpid(pid), running our handlers as soon as a signal arrives; the wait status."""
        if self.wakeup_r < 0:
            return os.waitpid(pid, 0)[1]
        import select

        while True:
            ready, _, _ = select.select([pidfd, self.wakeup_r], [], [])
            if self.wakeup_r in ready:
                try:  # noqa: SIM105 (contextlib is slow to import)
                    os.read(self.wakeup_r, 512)  # the handlers ran before select returned
                except BlockingIOError:
                    pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pid is None:
            self.pending.append(signum)
            return
        try:  # noqa: SIM105 (contextlib is slow to import)
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def started(self, pid: int) -> None:
        """The container's pid is known: deliver what was held."""
        self.pid = pid
        for signum in self.pending:
            self._handle(signum, None)
        self.pending.clear()


def _seccomp(spec: Spec, caps: frozenset[str]) -> bytes | None:
    sec = spec.security
    if sec.privileged or sec.seccomp == "unconfined":
        return None
    from kobako.runtime import seccomp

    return seccomp.compile_profile(sec.seccomp, caps, cache_dir=CACHE_DIR)


def run(
    spec: Spec,
    *,
    stdin: int = -1,
    stdout: int = -1,
    stderr: int = -1,
    interactive: bool = False,
    on_start: Callable[[int, dict[str, Any]], object] | None = None,
) -> Exit:
    """Run ``spec`` in a new container and wait for it to exit.

    Args:
        spec: What to run.
        stdin: Host fd for the container's stdin (-1: ours). Ignored with a terminal.
        stdout: Host fd for its stdout (-1: ours).
        stderr: Host fd for its stderr (-1: ours).
        interactive: With ``spec.process.terminal``, forward our stdin to the terminal.
        on_start: Called with the container's pid once it runs, and docker's
            ``NetworkSettings`` of its networks (``{}`` without one), to record them.

    Returns:
        The exit status, whether it was OOM-killed, and its resource usage.

    Raises:
        NotFound: The rootfs, a user or a group does not exist.
        InvalidArgument: The spec is inconsistent.
        CgroupError: The cgroup could not be made.
        StartError: A set-up step failed in the container (``CommandNotFound`` and
            ``CommandNotExecutable`` when the command could not be executed).

    Example:
        >>> from kobako.runtime import Process, Spec, run
        >>> run(Spec(root="/srv/busybox", process=Process(args=("true",)))).status
        0
    """
    cid = spec.id or os.urandom(32).hex()
    made = _made_for(cid)
    try:
        result = _run(spec, cid, made, stdin, stdout, stderr, interactive, on_start)
    except BaseException:
        made.remove(quiet=True)  # a failure to clean up must not hide the cause
        raise
    made.remove(quiet=False)
    return result


#: A runtime dir with no pid file yet is another kobako's container starting, unless older.
_START_GRACE_S = 60.0


def _write_pid(runtime_dir: str, pid: int, owner: int) -> None:
    """Record the container's pid and start time, and those of the process that cleans up
    after it (the kobako running it in the foreground, or its monitor), so that a later
    kobako can tell both are gone."""
    tmp = os.path.join(runtime_dir, ".pid.tmp")
    with open(tmp, "w") as f:
        f.write(f"{pid} {process_start(pid)} {owner} {process_start(owner)}\n")
    os.rename(tmp, os.path.join(runtime_dir, "pid"))


def _is_stale(runtime_dir: str) -> bool:
    """Whether a runtime dir was left by a container that ended without its clean-up: its
    process is gone, and so is the one that was to clean up (which may be at it now)."""
    try:
        with open(os.path.join(runtime_dir, "pid")) as f:
            fields = f.read().split()
    except FileNotFoundError:
        try:
            return os.stat(runtime_dir).st_mtime < time.time() - _START_GRACE_S
        except OSError:
            return False
    except OSError:
        return True
    if len(fields) not in (2, 4) or not all(x.isdigit() for x in fields[::2]):
        return True
    if process_start(int(fields[0])) == fields[1]:
        return False
    return len(fields) == 2 or process_start(int(fields[2])) != fields[3]


def _reap_stale(containers: str) -> None:
    """Remove what a kobako killed before its clean-up left: the runtime dir and cgroup of each
    container whose process is gone (pid and start time, never pid alone)."""
    try:
        names = os.listdir(containers)
    except FileNotFoundError:
        return
    for name in names:
        runtime_dir = os.path.join(containers, name)
        if _is_stale(runtime_dir) and remove_idle(name):
            _network_down(runtime_dir, quiet=True)
            _remove_flat_dir(runtime_dir)


def start_detached(
    spec: Spec,
    *,
    log_path: str,
    exit_path: str,
    exit_command: list[str],
    env: list[str],
    open_stdin: bool = False,
    attach: bool = False,
) -> Started:
    """Start ``spec`` under a new monitor and return at once; the container outlives us.

    The monitor (native code, see ``rust/monitor``) copies the container's stdout and stderr
    to ``log_path``, writes its exit status to ``exit_path`` when it ends, then executes
    ``exit_command`` with ``env``, which must :func:`cleanup` what this made (the cgroup and
    the runtime dir, which stay while the container runs). Clients of the monitor's socket
    :func:`attach_path` see its output and, with ``open_stdin`` (``-i``) or a terminal,
    send its input; otherwise stdin is /dev/null. With ``attach``, a client is connected
    before the container starts (``Started.client``), so that none of its output is missed.

    Raises:
        As :func:`run` does.
    """
    cid = spec.id
    made = _made_for(cid)
    fds: list[int] = []
    try:
        cgroup = _prepare(spec, cid, made)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        fds.append(null)
        if spec.process.terminal:
            from kobako.runtime.tty import open_pty

            pty = made.pty = open_pty()
            stdio, tty_fd, tty_path = (null, -1, -1), pty.slave, pty.slave_path
            out_r, err_r, in_w = pty.master, -1, -1
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            fds += [out_r, out_w, err_r, err_w]
            in_r, in_w = null, -1
            if open_stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                fds += [in_r, in_w]
            stdio, tty_fd, tty_path = (in_r, out_w, err_w), -1, None
        plan = _plan(spec, cid, made, cgroup, stdio, tty_fd, tty_path)
        listener, client = _attach_socket(attach_path(cid), attach)
        if listener is not None:
            fds.append(listener.detach())
        made.client = client
        socket_path = attach_path(cid) if listener is not None else "-"
        argv = ["kobako-monitor", log_path, exit_path, socket_path, *exit_command]
        listen = fds[-1] if listener is not None else -1
        pid, monitor = _native.spawn_detached(plan, argv, env, (out_r, err_r, in_w, listen, null))
        made.close_netns()
        _write_pid(made.runtime_dir, pid, monitor)
        started = Started(
            pid=pid,
            pid_start=process_start(pid) or "",
            monitor_pid=monitor,
            monitor_start=process_start(monitor) or "",
            boot_id=boot_id(),
            client=made.client,
            network=made.network or None,
        )
        made.client = None
    except BaseException:
        if made.client is not None:
            made.client.close()
        made.remove(quiet=True)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    if made.pty:
        made.pty.close()
    if cgroup.clone_fd is not None:
        os.close(cgroup.clone_fd)
        cgroup.clone_fd = None
    return started


#: The longest unix socket path (sun_path, NUL included).
_SUN_PATH_MAX = 108


def _attach_socket(path: str, connect: bool) -> tuple[socket.socket | None, socket.socket | None]:
    """The monitor's listening socket, and a client connected to it if asked (it waits in the
    backlog until the monitor accepts it). None where the path is too long for a socket."""
    import socket

    if len(path.encode()) >= _SUN_PATH_MAX:
        if connect:
            raise InvalidArgument(f"cannot attach: the socket path {path} is too long")
        return None, None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.bind(path)
        listener.listen(8)
        client = None
        if connect:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            client.connect(path)
    except BaseException:
        listener.close()
        raise
    return listener, client


def attach_path(cid: str) -> str:
    """The unix socket where a detached container's monitor serves attach clients."""
    return os.path.join(RUN_DIR, "containers", cid, "attach")


def cleanup(cid: str) -> None:
    """Remove what :func:`start_detached` left for a container that has ended: its cgroup
    (killing whatever is left in it) and its runtime dir. Harmless if they are gone.

    Raises:
        CgroupError: The cgroup could not be removed (the runtime dir is then kept, so that a
            later kobako finds it).
    """
    cgroup = Cgroup.find(cid)
    if cgroup is not None:
        cgroup.destroy()
    runtime_dir = os.path.join(RUN_DIR, "containers", cid)
    _network_down(runtime_dir, quiet=False)
    _remove_flat_dir(runtime_dir)


class _Made:
    """What :func:`run` made for a container, removed whatever happens."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self.client: socket.socket | None = None
        self.cgroup: Cgroup | None = None
        self.pty: Pty | None = None
        self.pidfd = -1
        self.netns = -1
        #: docker's NetworkSettings of what was set up (empty without a network)
        self.network: dict[str, Any] = {}
        #: the container ran and every process of it is gone
        self.ended = False

    def close_netns(self) -> None:
        """Let go of the network namespace once the container holds it."""
        if self.netns >= 0:
            os.close(self.netns)
            self.netns = -1

    def remove(self, *, quiet: bool) -> None:
        self.close_netns()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.pty:
            self.pty.close()
        if self.cgroup:
            try:
                self.cgroup.destroy()
            except CgroupError:
                # keep the runtime dir: through it a later kobako finds and removes the cgroup
                if not quiet:
                    raise
                return
        _network_down(self.runtime_dir, quiet=quiet, ended=self.ended)
        _remove_flat_dir(self.runtime_dir)


def _network_down(runtime_dir: str, *, quiet: bool, ended: bool = False) -> None:
    """Remove the container's veths, address leases and published ports, if it had any."""
    if not os.path.exists(os.path.join(runtime_dir, "network.json")):
        return
    from kobako.errors import KobakoError
    from kobako.network import endpoints

    try:
        endpoints.down(runtime_dir, ended=ended)
    except KobakoError:
        if not quiet:
            raise


def _remove_flat_dir(path: str) -> None:
    """Remove a directory of plain files (what :func:`launch.write_etc_files` made), quietly."""
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass


def _made_for(cid: str) -> _Made:
    """The container's runtime dir, made (0700), after removing what dead ones left."""
    if not cid or len(cid) < 12 or not all(c in "0123456789abcdef" for c in cid):
        raise InvalidArgument(f"container id {cid!r} is not hexadecimal")
    containers = os.path.join(RUN_DIR, "containers")
    _reap_stale(containers)
    runtime_dir = os.path.join(containers, cid)
    os.makedirs(runtime_dir, mode=0o700)
    return _Made(runtime_dir)


def _prepare(spec: Spec, cid: str, made: _Made) -> Cgroup:
    """The container's network, /etc files and cgroup (kept in ``made``)."""
    ns = spec.namespaces
    addresses: tuple[str, ...] = ()
    if ns.network.startswith("container:"):
        from kobako.network import endpoints

        made.netns = endpoints.join(spec.network.join or ns.network[len("container:") :])
    elif ns.network not in ("none", "host"):
        from kobako.network import endpoints

        made.netns, made.network = endpoints.up(cid, spec.network, made.runtime_dir)
        addresses = tuple(n["IPAddress"] for n in made.network["Networks"].values())
    launch.write_etc_files(
        made.runtime_dir, spec.hostname or cid[:12], ns.network, spec.network, addresses
    )
    if ns.uid_map or ns.gid_map:
        # the container's root must reach its /etc files through this 0700 directory
        os.chown(made.runtime_dir, _host_id(ns.uid_map), _host_id(ns.gid_map))
    made.cgroup = Cgroup.create(cid, spec.resources, privileged=spec.security.privileged)
    return made.cgroup


def _plan(
    spec: Spec,
    cid: str,
    made: _Made,
    cgroup: Cgroup,
    stdio: tuple[int, int, int],
    tty_fd: int,
    tty_path: str | None,
) -> dict[str, Any]:
    caps = launch.capability_names(spec)  # read once: it reads /proc/self/status
    return launch.build_plan(
        spec,
        runtime_dir=made.runtime_dir,
        hostname=spec.hostname or cid[:12],
        stdio=stdio,
        tty_fd=tty_fd,
        tty_path=tty_path,
        cgroup_fd=cgroup.clone_fd,
        cgroup_join=cgroup.join_files,
        cgroup_mounts=cgroup.container_mounts(),
        caps=caps,
        seccomp=_seccomp(spec, caps),
        netns=made.netns,
    )


def _run(
    spec: Spec,
    cid: str,
    made: _Made,
    stdin: int,
    stdout: int,
    stderr: int,
    interactive: bool,
    on_start: Callable[[int, dict[str, Any]], object] | None,
) -> Exit:
    cgroup = _prepare(spec, cid, made)
    if spec.process.terminal:
        from kobako.runtime.tty import open_pty

        made.pty = open_pty()
    pty = made.pty
    plan = _plan(
        spec,
        cid,
        made,
        cgroup,
        (stdin, stdout, stderr),
        pty.slave if pty else -1,
        pty.slave_path if pty else None,
    )
    with _SignalForwarder() as forwarder:
        pid, made.pidfd = _native.spawn(plan)
        made.close_netns()
        forwarder.started(pid)
        _write_pid(made.runtime_dir, pid, os.getpid())
        if on_start is not None:
            on_start(pid, made.network)
        if pty:
            pty.close_slave()
            pty.proxy(stdin=interactive, wakeup=forwarder.wakeup_r)
        status = forwarder.wait(pid, made.pidfd)
    made.ended = True
    return Exit(
        status=_decode(status), oom_killed=cgroup.oom_killed(), stats=cgroup.stats(), id=cid
    )
