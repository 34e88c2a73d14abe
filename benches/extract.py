"""Layer extraction: kobako's extractor against tar, pigz, zstd and umoci, interleaved.

The layer is a Debian bookworm minbase root filesystem made by ``mmdebstrap --variant=minbase
--format=tar`` (about 170 MB, 8,700 entries), with ``gzip -6`` and ``zstd -3`` copies, all
cached (``--cache``, ``$KOBAKO_BENCH_CACHE`` or ``/var/cache/kobako-bench``). Every
measurement extracts into an empty directory on a fresh journaled ext4 made for it alone
(``truncate -s 6G``, ``mkfs.ext4 -F -q``, ``mount -o loop``), then unmounts and deletes it:
the host's own file system drifts after many creates and deletes (see ``benches/README.md``).

Rows (each tool once per round, in a shuffled order, after untimed warm-up rounds):

* ``kobako gzip|zstd|tar (API)``: ``kobako._native.extract_layer`` called in this process,
  timed around the call (open of the blob included);
* ``kobako gzip|zstd|tar (process)``: the same in a fresh ``python -c``, so interpreter start
  and ``import kobako._native`` are included;
* ``tar -xzf``, ``pigz -dc | tar -x``, ``zstd -dc | tar -x``, ``tar -xf`` (uncompressed: the
  file-creation floor), ``umoci unpack`` (of an OCI layout holding the layer, gzip);
* decoding alone, to ``/dev/null``: ``gzip -dc``, ``pigz -dc``, ``zstd -dc``.

No tool syncs: each is timed until it returns, as ``tar`` would be; the unmount that follows
(untimed) writes everything back, and a ``sync`` after deleting the image lets that writeback
end before the next measurement. Run as root::

    python benches/extract.py              # 7 rounds
    python benches/extract.py -n 11 --json samples.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kobako import _native

DEFAULT_CACHE = "/var/cache/kobako-bench"
ROOTFS = "bookworm-minbase.tar"
#: The issue's targets: (row, baseline, largest ratio of medians).
TARGETS = [
    ("kobako gzip (API)", "tar -xzf", 0.6),
    ("kobako zstd (API)", "zstd -dc | tar -x", 0.8),
    ("kobako gzip (API)", "tar -xf", 1.25),
    ("kobako zstd (API)", "tar -xf", 1.25),
]
BASELINES = ("tar -xzf", "zstd -dc | tar -x", "tar -xf")
PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "pigz": "pigz",
    "zstd": "zstd",
    "umoci": "umoci",
    "mkfs.ext4": "e2fsprogs",
}


def run(cmd: list[str] | str, **kwargs: object) -> None:
    """Run a command, failing loudly with its stderr."""
    done = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        sys.exit(f"extract.py: {cmd} failed ({done.returncode}): {done.stderr.decode().strip()}")


def install_missing() -> None:
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        print(f"installing {' '.join(missing)}", file=sys.stderr)
        run(["apt-get", "update", "-qq"])
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def prepare(cache: Path) -> dict[str, Path]:
    """The cached layer (plain, gzip, zstd) and an OCI layout holding it; made when missing."""
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / ROOTFS
    if not tar.exists():
        print("building the Debian bookworm minbase tar with mmdebstrap", file=sys.stderr)
        run(["mmdebstrap", "--variant=minbase", "--format=tar", "bookworm", f"{tar}.tmp"])
        os.rename(f"{tar}.tmp", tar)
    gz, zst = cache / f"{ROOTFS}.gz", cache / f"{ROOTFS}.zst"
    if not gz.exists():
        run(f"gzip -6 -c {tar} > {gz}.tmp && mv {gz}.tmp {gz}")
    if not zst.exists():
        run(f"zstd -q -3 -c {tar} > {zst}.tmp && mv {zst}.tmp {zst}")
    oci = cache / "oci"
    if not (oci / "index.json").exists():
        shutil.rmtree(oci, ignore_errors=True)
        run(["umoci", "init", "--layout", f"{oci}.tmp"])
        run(["umoci", "new", "--image", f"{oci}.tmp:bench"])
        run(["umoci", "raw", "add-layer", "--image", f"{oci}.tmp:bench", str(tar)])
        os.rename(f"{oci}.tmp", oci)
    return {"tar": tar, "gzip": gz, "zstd": zst, "oci": oci}


class Scratch:
    """A fresh journaled ext4 on a loop file, mounted at ``mnt``, with an empty ``mnt/t``."""

    def __init__(self, base: Path) -> None:
        self.image = base / "fs.img"
        self.mnt = base / "mnt"
        self.mnt.mkdir(exist_ok=True)

    def __enter__(self) -> Path:
        run(["truncate", "-s", "6G", str(self.image)])
        run(["mkfs.ext4", "-F", "-q", str(self.image)])
        run(["mount", "-o", "loop", str(self.image), str(self.mnt)])
        target = self.mnt / "t"
        target.mkdir()
        return target

    def __exit__(self, *exc: object) -> None:
        run(["umount", str(self.mnt)])
        self.image.unlink()
        run(["sync"])


def api(blob: Path) -> Callable[[Path], None]:
    def extract(target: Path) -> None:
        fd = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _native.extract_layer(fd, str(target), "bench")
        finally:
            os.close(fd)

    return extract


def process(blob: Path) -> Callable[[Path], None]:
    code = (
        "import os, sys; from kobako import _native; "
        "_native.extract_layer(os.open(sys.argv[1], os.O_RDONLY), sys.argv[2], 'bench')"
    )
    return lambda target: run([sys.executable, "-c", code, str(blob), str(target)])


def shell(cmd: str) -> Callable[[Path], None]:
    return lambda target: run(cmd.format(target=target))


def tools(files: dict[str, Path]) -> dict[str, tuple[bool, Callable[[Path], None]]]:
    """Each row: (needs a fresh file system, what to time given the target directory)."""
    tar, gz, zst, oci = files["tar"], files["gzip"], files["zstd"], files["oci"]
    return {
        "kobako gzip (API)": (True, api(gz)),
        "kobako zstd (API)": (True, api(zst)),
        "kobako tar (API)": (True, api(tar)),
        "kobako gzip (process)": (True, process(gz)),
        "kobako zstd (process)": (True, process(zst)),
        "kobako tar (process)": (True, process(tar)),
        "tar -xzf": (True, shell(f"tar -xzf {gz} -C {{target}}")),
        "pigz -dc | tar -x": (True, shell(f"pigz -dc {gz} | tar -x -C {{target}}")),
        "zstd -dc | tar -x": (True, shell(f"zstd -dc {zst} | tar -x -C {{target}}")),
        "tar -xf": (True, shell(f"tar -xf {tar} -C {{target}}")),
        "umoci unpack": (True, shell(f"umoci unpack --image {oci}:bench {{target}}/bundle")),
        "gzip -dc (decode only)": (False, shell(f"gzip -dc {gz} > /dev/null")),
        "pigz -dc (decode only)": (False, shell(f"pigz -dc {gz} > /dev/null")),
        "zstd -dc (decode only)": (False, shell(f"zstd -dc {zst} > /dev/null")),
    }


def measure(rows: dict[str, tuple[bool, Callable[[Path], None]]], base: Path, name: str) -> float:
    fresh_fs, fn = rows[name]
    if not fresh_fs:
        start = time.perf_counter()
        fn(base)
        return time.perf_counter() - start
    with Scratch(base) as target:
        start = time.perf_counter()
        fn(target)
        return time.perf_counter() - start


def md(text: str) -> str:
    """``text`` for a Markdown table cell."""
    return text.replace("|", "\\|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", help="comma-separated rows to run (baselines are added)")
    parser.add_argument(
        "--cache", default=os.environ.get("KOBAKO_BENCH_CACHE", DEFAULT_CACHE), type=Path
    )
    parser.add_argument("--json", type=Path, help="save the samples here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("extract.py: run as root (loop mounts, and tar keeps owners only as root)")
    install_missing()
    files = prepare(args.cache)
    rows = tools(files)
    if args.only:
        wanted = set(args.only.split(",")) | set(BASELINES)
        rows = {k: v for k, v in rows.items() if k in wanted}
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory(prefix="kobako-bench-") as tmp:
        base = Path(tmp)
        for r in range(args.warmup + args.rounds):
            order = list(rows)
            rng.shuffle(order)
            for name in order:
                t = measure(rows, base, name)
                if r >= args.warmup:
                    samples[name].append(t)
            print(f"round {r + 1}/{args.warmup + args.rounds} done", file=sys.stderr)

    medians = {name: statistics.median(ts) for name, ts in samples.items()}
    sizes = {k: files[k].stat().st_size / 1e6 for k in ("tar", "gzip", "zstd")}
    print(
        f"\n{platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}, "
        f"{args.rounds} rounds (seed {seed}); layer: tar {sizes['tar']:.0f} MB, "
        f"gzip {sizes['gzip']:.0f} MB, zstd {sizes['zstd']:.0f} MB\n"
    )
    present = [b for b in BASELINES if b in medians]
    cells = " | ".join(f"vs {md(b)}" for b in present)
    header = f"| {'tool':<25} | median s | {cells} |"
    print(header)
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(2 + len(present))) + "|")
    for name, m in medians.items():
        ratios = " | ".join(f"{m / medians[b]:.2f}x" for b in present)
        print(f"| {md(name):<25} | {m:.3f} | {ratios} |")
    print()
    failed = False
    for row, baseline, limit in TARGETS:
        if row in medians and baseline in medians:
            ratio = medians[row] / medians[baseline]
            # The same ratio within each round, for the drift of these VMs.
            paired = statistics.median(
                a / b for a, b in zip(samples[row], samples[baseline], strict=True)
            )
            ok = ratio <= limit
            failed |= not ok
            print(
                f"target {row} <= {limit}x {baseline}: {ratio:.2f}x (paired {paired:.2f}x) "
                f"{'met' if ok else 'MISSED'}"
            )
    if args.json:
        meta = {"seed": seed, "kernel": platform.release(), "rounds": args.rounds}
        args.json.write_text(json.dumps({"meta": meta, "samples": samples}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
