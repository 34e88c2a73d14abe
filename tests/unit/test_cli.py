"""`kobako run` flags map onto the runtime spec as docker's do; bad ones are one line, 125."""

from __future__ import annotations

import pytest

from kobako.cli.main import UsageError, main
from kobako.cli.run import build_spec
from kobako.runtime.spec import IdMap, Mount


def test_flags_to_spec(tmp_path: object) -> None:
    spec, interactive = build_spec(
        [
            "-it", "--rm", "--init", "-e", "A=1", "-w", "/srv", "-u", "daemon:wheel", "-h", "box",
            "-v", "/tmp:/data:ro", "--tmpfs", "/scratch", "--read-only", "--cap-add", "net_admin",
            "--cap-drop", "CHOWN", "--security-opt", "seccomp=unconfined", "--ulimit",
            "nofile=10:20", "--network", "host", "-m", "64m", "--memory-swap", "-1", "--cpus",
            "1.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "100",
            "--uidmap", "0:1000:10", "--rootfs", "/rootfs", "sh", "-c", "echo -e hi",
        ]
    )  # fmt: skip
    assert interactive
    p = spec.process
    assert spec.root == "/rootfs" and p.args == ("sh", "-c", "echo -e hi")
    assert p.terminal and p.init and p.env == ("A=1",) and p.cwd == "/srv"
    assert p.user == "daemon:wheel" and spec.hostname == "box"
    assert p.rlimits[0].type == "nofile" and (p.rlimits[0].soft, p.rlimits[0].hard) == (10, 20)
    assert spec.mounts[0] == Mount(
        destination="/data", source="/tmp", type="bind", options=spec.mounts[0].options
    )
    assert "ro" in spec.mounts[0].options and spec.mounts[1].type == "tmpfs"
    s = spec.security
    assert s.readonly_rootfs and s.seccomp == "unconfined" and s.no_new_privileges
    assert s.cap_add == ("CAP_NET_ADMIN",) and s.cap_drop == ("CAP_CHOWN",)
    r = spec.resources
    assert (r.memory, r.memory_swap, r.nano_cpus) == (64 << 20, -1, 1_500_000_000)
    assert (r.cpu_shares, r.cpuset_cpus, r.pids_limit) == (512, "0", 100)
    assert spec.namespaces.network == "host"
    assert spec.namespaces.uid_map == (IdMap(container_id=0, host_id=1000, size=10),)


def test_entrypoint_prepends() -> None:
    spec, _ = build_spec(["--entrypoint", "/bin/echo", "--rootfs", "/r", "a", "b"])
    assert spec.process.args == ("/bin/echo", "a", "b")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus", "--rootfs", "/r", "true"], "unknown flag: --bogus"),
        (["--memory"], "flag needs an argument: --memory"),
        (["-m", "lots", "--rootfs", "/r", "true"], 'invalid argument "lots" for "-m, --memory"'),
        (["--cpus", "x", "--rootfs", "/r", "true"], 'invalid argument "x" for "--cpus"'),
        (["--network", "bridge", "--rootfs", "/r", "true"], "network bridge not found"),
        (["--security-opt", "apparmor=x", "--rootfs", "/r", "true"], "invalid --security-opt"),
        (["busybox", "true"], "images are not supported yet"),
        (["--rootfs", "/r"], "no command specified"),
        (["-d", "--rootfs", "/r", "true"], "not supported yet"),
    ],
)
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("$", r"\$")):
        build_spec(argv)


def test_main_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--bogus", "--rootfs", "/r", "true"]) == 125
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "kobako: unknown flag: --bogus"
    assert "Traceback" not in err
    assert main(["frobnicate"]) == 125
    assert "'frobnicate' is not a kobako command" in capsys.readouterr().err
    assert main(["run", "--rootfs", "/nonexistent/rootfs", "true"]) == 125
    assert capsys.readouterr().err.count("\n") == 1
