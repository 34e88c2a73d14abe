"""`kobako run` flags map onto the runtime spec as docker's do; bad ones are one line, 125."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.cli.args import BOOL, INT, STRING, STRING_ARRAY, Command, Flag, Flags, quote
from kobako.cli.main import Help, UsageError, main
from kobako.cli.run import build_spec
from kobako.runtime.spec import IdMap, Mount


def test_flags_to_spec(tmp_path: object) -> None:
    spec, parsed = build_spec(
        [
            "-it", "--rm", "--init", "-e", "A=1", "-w", "/srv", "-u", "daemon:wheel", "-h", "box",
            "-v", "/tmp:/data:ro", "--tmpfs", "/scratch", "--read-only", "--cap-add", "net_admin",
            "--cap-drop", "CHOWN", "--security-opt", "seccomp=unconfined", "--ulimit",
            "nofile=10:20", "--network", "host", "-m", "64m", "--memory-swap", "-1", "--cpus",
            "1.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "100",
            "--uidmap", "0:1000:10", "--rootfs", "/rootfs", "sh", "-c", "echo -e hi",
        ]
    )  # fmt: skip
    assert parsed.interactive and parsed.rootfs and parsed.auto_remove
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
        (["-p", "http", "--rootfs", "/r", "true"], "invalid container port 'http'"),
        (["--security-opt", "apparmor=x", "--rootfs", "/r", "true"], "invalid --security-opt"),
        (["--rootfs", "/r"], "no command specified"),
        (["-d", "--rootfs", "/r", "true"], "a detached container needs an image"),
    ],
)
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("$", r"\$")):
        build_spec(argv)


def test_main_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--bogus", "--rootfs", "/r", "true"]) == 125
    err = capsys.readouterr().err
    assert err == "kobako: unknown flag: --bogus\n"
    assert main(["frobnicate"]) == 125
    assert "'frobnicate' is not a kobako command" in capsys.readouterr().err
    assert main(["run", "--rootfs", "/nonexistent/rootfs", "true"]) == 125
    assert capsys.readouterr().err.count("\n") == 1


# --- the flag parser (spf13/pflag's rules, as docker run sets them up) ---

TABLE = Command(
    "t [OPTIONS] ARG...",
    "A test command",
    (
        Flag("interactive", "i", BOOL, "Keep STDIN open"),
        Flag("tty", "t", BOOL, "Allocate a pseudo-TTY"),
        Flag("rm", "", BOOL, "Remove"),
        Flag("user", "u", STRING, "User"),
        Flag("memory", "m", STRING, "Memory limit", varname="bytes"),
        Flag("env", "e", STRING_ARRAY, "Environment", varname="list"),
        Flag("count", "c", INT, "A number"),
        Flag("network", "", STRING, "Network", default="none", aliases=("net",)),
    ),
    interspersed=False,
)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-it", "x"], {"interactive": True, "tty": True}),
        (["-i", "-t", "x"], {"interactive": True, "tty": True}),
        (["-itu1000", "x"], {"interactive": True, "tty": True, "user": "1000"}),
        (["-itu", "1000", "x"], {"interactive": True, "user": "1000"}),
        (["-iu=1000", "x"], {"interactive": True, "user": "1000"}),
        (["-u=", "x"], {"user": "="}),  # "-f=" is too short for pflag's '=' form
        (["-m", "512m", "x"], {"memory": "512m"}),
        (["-m512m", "x"], {"memory": "512m"}),
        (["-m=512m", "x"], {"memory": "512m"}),
        (["--memory=512m", "x"], {"memory": "512m"}),
        (["--memory", "512m", "x"], {"memory": "512m"}),
        (["--memory=", "x"], {"memory": ""}),
        (["--memory=a=b", "x"], {"memory": "a=b"}),
        (["-m", "--rm", "x"], {"memory": "--rm", "rm": False}),  # a value is the next word
        (["--user", "-1", "x"], {"user": "-1"}),
        (["--rm", "x"], {"rm": True}),
        (["--rm=false", "x"], {"rm": False}),
        (["--rm=true", "x"], {"rm": True}),
        (["--rm=0", "x"], {"rm": False}),
        (["--rm=T", "x"], {"rm": True}),
        (["--rm=FALSE", "x"], {"rm": False}),
        (["-i=false", "x"], {"interactive": False}),
        (["-i=1", "x"], {"interactive": True}),
        (
            ["-e", "A=1", "--env=B=2", "-eC=3", "--env", "D", "x"],
            {"env": ["A=1", "B=2", "C=3", "D"]},
        ),
        (["--net", "host", "x"], {"network": "host"}),
        (["--net=host", "x"], {"network": "host"}),
        (["x"], {"network": "none", "env": [], "user": "", "count": 0, "rm": False}),
        (["-c", "42", "x"], {"count": 42}),
        (["-c", "-42", "x"], {"count": -42}),
        (["-c=+7", "x"], {"count": 7}),
        (["--count=0x1F", "x"], {"count": 31}),
        (["-c", "0o17", "x"], {"count": 15}),
        (["-c", "017", "x"], {"count": 15}),  # a leading 0 is octal, as in Go
        (["-c", "-0b101", "x"], {"count": -5}),
        (["-c", "1_000", "x"], {"count": 1000}),
        (["-c", "0x_ff", "x"], {"count": 255}),
        (["-c", "0", "x"], {"count": 0}),
        (["-c", "9223372036854775807", "x"], {"count": (1 << 63) - 1}),
        (["-c", "-9223372036854775808", "x"], {"count": -(1 << 63)}),
    ],
)
def test_parse_values(argv: list[str], expected: dict[str, object]) -> None:
    o = TABLE.parse(argv)
    got = {name: _value(o, name) for name in expected}
    assert got == expected
    assert o.args == ["x"]


def _value(o: Flags, name: str) -> object:
    for get in (o.get_bool, o.get_string, o.get_strings, o.get_int):
        try:
            return get(name)
        except KeyError:
            continue
    raise KeyError(name)


@pytest.mark.parametrize(
    ("argv", "args"),
    [
        (["x", "--rm", "-i"], ["x", "--rm", "-i"]),  # flags stop at the first positional
        (["-i", "x", "-t"], ["x", "-t"]),
        (["--", "-i", "x"], ["-i", "x"]),  # -- ends the flags
        (["-i", "--", "--", "x"], ["--", "x"]),
        (["--"], []),
        ([], []),
        (["-", "-i"], ["-", "-i"]),  # a lone dash is an argument
        (["", "-i"], ["", "-i"]),
        (["--rm", "false"], ["false"]),  # a bool takes a value only after '='
    ],
)
def test_parse_stops_at_first_argument(argv: list[str], args: list[str]) -> None:
    o = TABLE.parse(argv)
    assert o.args == args
    assert not o.get_bool("tty")


def test_changed() -> None:
    o = TABLE.parse(["--memory=", "--rm=false", "--net", "none", "x"])
    assert o.changed("memory") and o.changed("rm") and o.changed("network")
    assert not o.changed("user") and not o.changed("env") and not o.changed("count")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unknown flag: --bogus"),
        (["--bogus=1", "x"], "unknown flag: --bogus"),
        (["-i", "--Rm", "x"], "unknown flag: --Rm"),
        (["--mem", "1", "x"], "unknown flag: --mem"),  # no abbreviations
        (["-z"], "unknown shorthand flag: 'z' in -z"),
        (["-itz", "x"], "unknown shorthand flag: 'z' in -z"),
        (["-izt", "x"], "unknown shorthand flag: 'z' in -zt"),
        (["--memory"], "flag needs an argument: --memory"),
        (["-i", "--env"], "flag needs an argument: --env"),
        (["-m"], "flag needs an argument: 'm' in -m"),
        (["-im"], "flag needs an argument: 'm' in -m"),
        (["---rm"], "bad flag syntax: ---rm"),
        (["--=x"], "bad flag syntax: --=x"),
        (
            ["--rm=x"],
            'invalid argument "x" for "--rm" flag: strconv.ParseBool: parsing "x": invalid syntax',
        ),
        (["--rm="], 'invalid argument "" for "--rm" flag: strconv.ParseBool: parsing ""'),
        (
            ["-i=yes", "x"],
            'invalid argument "yes" for "-i, --interactive" flag: strconv.ParseBool: '
            'parsing "yes": invalid syntax',
        ),
        (
            ["-c", "x"],
            'invalid argument "x" for "-c, --count" flag: strconv.ParseInt: '
            'parsing "x": invalid syntax',
        ),
        (
            ["--count", "9223372036854775808"],
            'invalid argument "9223372036854775808" for "-c, --count" flag: strconv.ParseInt: '
            'parsing "9223372036854775808": value out of range',
        ),
        (["-c", "-9223372036854775809"], "value out of range"),
        (["--rm=a\nb"], r'invalid argument "a\nb" for "--rm" flag'),  # quoted as Go's %q
    ]
    + [
        (["-c", bad], f'parsing "{bad}": invalid syntax')
        for bad in [
            *["", "1.5", " 1", "1 ", "+", "-", "0x", "08", "0b2", "1__0", "_1", "1_", "0x0x1"],
            *["0_x1", "\u0661", "1e3", "--1", "0x1g"],
        ]
    ],
)
def test_parse_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        TABLE.parse(argv)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_help() -> None:
    with pytest.raises(Help) as e:
        TABLE.parse(["-i", "--help", "-t"])
    usage = e.value.usage
    assert usage.startswith("Usage:  t [OPTIONS] ARG...\n\nA test command\n\nOptions:\n")
    lines = usage.splitlines()
    assert lines[5:] == [  # sorted by name; the column is three spaces after the longest
        "  -c, --count int        A number",
        "  -e, --env list         Environment",
        "  -h, --help             Print usage",  # -h is free in this table, so help takes it
        "  -i, --interactive      Keep STDIN open",
        "  -m, --memory bytes     Memory limit",
        '      --network string   Network (default "none")',
        "      --rm               Remove",
        "  -t, --tty              Allocate a pseudo-TTY",
        "  -u, --user string      User",
    ]
    assert not any("--net " in line for line in lines)  # aliases are hidden
    with pytest.raises(Help):
        TABLE.parse(["-ih"])
    assert TABLE.parse(["--help=false", "x"]).args == ["x"]
    assert TABLE.parse(["x", "--help"]).args == ["x", "--help"]
    with pytest.raises(UsageError, match="unknown flag: --bogus"):
        TABLE.parse(["--help", "--bogus"])  # as cobra: flags are parsed before help is shown


def test_run_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage:  kobako run [OPTIONS] IMAGE [COMMAND] [ARG...]\n")
    assert "  -h, --hostname string" in out and "      --help " in out  # -h is the hostname
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    assert len({len(row) - len(row[9:].split("   ", 1)[1].lstrip()) for row in rows}) == 1
    for flag in ("--memory bytes", "--cpus decimal", "--network network", "--pids-limit int"):
        assert flag in out


def test_run_flags_are_docker_s() -> None:
    spec, parsed = build_spec(
        [
            *["-itc=512", "--net=host", "-h", "box", "--pids-limit=0x10", "--rm=false"],
            *["--rootfs", "/r", "sh", "-c", "--rm", "--", "-it"],
        ]
    )
    assert parsed.interactive and spec.process.terminal and spec.hostname == "box"
    assert spec.resources.cpu_shares == 512 and spec.resources.pids_limit == 16
    assert spec.namespaces.network == "host"
    assert spec.process.args == ("sh", "-c", "--rm", "--", "-it")
    spec, parsed = build_spec(["--entrypoint=", "--rootfs", "/r", "true"])
    assert spec.process.args == ("true",) and not parsed.interactive
    assert spec.resources.cpu_shares is None and spec.resources.memory is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "'kobako run' requires at least 1 argument"),
        (["--rm"], "'kobako run' requires at least 1 argument"),
        (["-c", "x", "--rootfs", "/r", "true"], 'invalid argument "x" for "-c, --cpu-shares"'),
        (["--pids-limit", "1.5", "--rootfs", "/r", "true"], 'invalid argument "1.5" for "--pids'),
        (["-z", "--rootfs", "/r", "true"], "unknown shorthand flag: 'z' in -z"),
        (["-m"], "flag needs an argument: 'm' in -m"),
        (["--rootfs=maybe", "/r", "true"], 'invalid argument "maybe" for "--rootfs" flag'),
        (["--net", "host", "-p", "80", "--rootfs", "/r", "true"], "port publishing and the host"),
    ],
)
def test_run_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        build_spec(argv)
    assert message in str(e.value)


_FLAG_WORDS = st.sampled_from(
    [
        *[["-i"], ["-it"], ["--rm"], ["--rm=false"], ["-m", "1g"], ["-m1g"], ["--memory=-1"]],
        *[["-e", "A=1"], ["--env", "--"], ["-c", "0x10"], ["--net", "host"], ["-tiu", "1"]],
    ]
)
_ARGUMENT = st.text().filter(lambda s: s == "-" or not s.startswith("-"))


@given(st.lists(_FLAG_WORDS, max_size=6), _ARGUMENT, st.lists(st.text(), max_size=8))
def test_arguments_after_the_first_pass_through(
    flags: list[list[str]], first: str, rest: list[str]
) -> None:
    argv = [word for words in flags for word in words] + [first, *rest]
    assert TABLE.parse(argv).args == [first, *rest]
    assert TABLE.parse([*argv[: len(argv) - len(rest) - 1], "--", *rest]).args == rest


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_int_flags_read_go_integers(n: int) -> None:
    for text in (str(n), f"{n:#x}", f"{n:#o}", f"{n:#b}", f"{n:_}", f"{n:#_x}"):
        assert TABLE.parse(["-c", text, "x"]).get_int("count") == n


@given(st.text(), st.sampled_from(['"', "'"]))
def test_quote_is_one_line_and_reads_back(text: str, mark: str) -> None:
    quoted = quote(text, mark)
    assert quoted.isprintable() and quoted[0] == quoted[-1] == mark
    assert ast.literal_eval(quoted) == text


def test_flags_may_follow_arguments_except_where_a_command_follows() -> None:
    from kobako.cli.images import SAVE
    from kobako.cli.run import COMMAND

    o = SAVE.parse(["busybox", "-o", "x.tar"])
    assert (o.args, o.get_string("output")) == (["busybox"], "x.tar")
    r = COMMAND.parse(["--rm", "img", "ls", "-l"])
    assert r.args == ["img", "ls", "-l"] and r.get_bool("rm")
