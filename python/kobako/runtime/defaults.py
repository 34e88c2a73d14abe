"""Docker's defaults for a container, as moby's ``oci/defaults.go`` and runc set them.

Kept as data so that :mod:`kobako.runtime.launch` reads as the policy it applies.
"""

from __future__ import annotations

from kobako.runtime.spec import Mount

#: The filesystems every container gets, in mount order (moby's DefaultLinuxSpec).
MOUNTS: tuple[Mount, ...] = (
    Mount(destination="/proc", type="proc", source="proc", options=("nosuid", "noexec", "nodev")),
    Mount(
        destination="/dev",
        type="tmpfs",
        source="tmpfs",
        options=("nosuid", "strictatime", "mode=755", "size=65536k"),
    ),
    Mount(
        destination="/dev/pts",
        type="devpts",
        source="devpts",
        options=("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
    Mount(
        destination="/sys",
        type="sysfs",
        source="sysfs",
        options=("nosuid", "noexec", "nodev", "ro"),
    ),
    Mount(
        destination="/dev/mqueue",
        type="mqueue",
        source="mqueue",
        options=("nosuid", "noexec", "nodev"),
    ),
    Mount(
        destination="/dev/shm",
        type="tmpfs",
        source="shm",
        options=("nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
    ),
)

#: Paths hidden from the container (moby's defaults): /dev/null over files, an empty tmpfs
#: over directories.
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

#: Paths made read-only (moby's defaults).
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

#: Device nodes in /dev: (path, major, minor); all character devices, mode 0666 (runc's list).
DEVICES: tuple[tuple[str, int, int], ...] = (
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
)

#: Symlinks in /dev: (target, link).
DEV_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
    ("/proc/kcore", "/dev/core"),
)

#: /etc/hosts for a container, as Docker writes it (the hostname line is appended).
HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
