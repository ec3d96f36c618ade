"""Benchmark (not a test): what images cost.

    /opt/cellblock/venv/bin/python bench/images.py [--iterations 200] [--archive FILE]

1. Per-cell cost of a 5-layer image against the `host` image: the same static
   program (busybox-static's `true`, the host's /bin/busybox copied into the
   image) by sandbox.run, interleaved, with warm cells (a long-lived caller's
   default), cold cells (each made for its run) and recycled ones. Goal: the
   image within 10 % of `host`.
2. Pull and unpack of the Python image (scripts/build-images' python-sci;
   built first when --archive is not given: about a minute, from Debian's
   mirror) against `skopeo copy` of the same archive alone into an OCI layout
   (what any skopeo-based tool pays before it unpacks anything), and against
   that copy plus GNU tar unpacking its layer (unchecked, as root).
3. Disk: two images that share that base layer (each adds a small layer of
   its own) as stored, against the sum of their sizes.

Timings are reported, never judged. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # time the working tree's sandbox, not an installed copy
sys.path.insert(0, str(REPO / "tests"))  # the OCI layouts the image tests build

from image_support import BASE, Entry, make_layout  # noqa: E402

import sandbox  # noqa: E402
from sandbox.imagestore import LayerStore  # noqa: E402
from sandbox.pull import PullOptions, pull  # noqa: E402

BUSYBOX_TRUE = ["/bin/busybox", "true"]
PYTHON_IMAGE = "cellblock/python-sci:bookworm"


def five_layers(path: Path) -> str:
    """busybox and four small layers on top: five overlay lowers."""
    layers = [BASE] + [
        [Entry(f"layer{i}/"), Entry(f"layer{i}/file", f"{i}\n".encode())] for i in range(4)
    ]
    return make_layout(path, "five", layers, {"Env": ["PATH=/bin"]}).oci()


def per_run(setups: dict[str, Callable[[], None]], iterations: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in setups}
    names = list(setups)
    for i in range(iterations):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order
            start = time.perf_counter()
            setups[name]()
            times[name].append(time.perf_counter() - start)
    return times


def check(result: sandbox.RunResult) -> None:
    if result.status != "OK":
        raise SystemExit(f"a run failed: {result.status} {result.message}")


def cell_cost(image: str, iterations: int) -> None:
    print("1. per-cell cost, /bin/busybox true (median ms; ratio image/host)")
    for mode in ("warm", "cold", "recycled"):
        sandbox.keep_warm(mode != "cold")
        sandbox.recycle_cells(mode == "recycled")
        runs = {
            "host": lambda: check(sandbox.run(BUSYBOX_TRUE)),
            "5-layer": lambda: check(sandbox.run(BUSYBOX_TRUE, image=image)),
        }
        per_run(runs, 10)  # warm-up: pools filled, caches hot
        times = per_run(runs, iterations)
        host, layered = (statistics.median(times[n]) * 1e3 for n in ("host", "5-layer"))
        print(f"   {mode:9s} host {host:6.2f}  5-layer {layered:6.2f}  ratio {layered / host:.2f}")
    sandbox.recycle_cells(None)
    sandbox.keep_warm(None)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def pull_cost(archive: Path, work: Path, store: LayerStore) -> None:
    print("2. the Python image: pull + unpack against skopeo copy alone (s)")
    reference = f"oci-archive:{archive}:{PYTHON_IMAGE}"
    copy = timed(["skopeo", "copy", "--quiet", reference, f"oci:{work / 'copy'}:x"])
    # What unpacking costs a plain tool: GNU tar on the layer blobs skopeo wrote.
    (work / "untarred").mkdir()
    blobs = sorted((work / "copy" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    untar = timed(["tar", "-xzf", str(blobs[-1]), "-C", str(work / "untarred")])
    start = time.perf_counter()
    image = pull(reference, PullOptions(), store)
    ours = time.perf_counter() - start
    print(
        f"   skopeo copy {copy:.2f}  + tar -xzf {copy + untar:.2f}  cellblock pull {ours:.2f}"
        f"  ratio {ours / copy:.2f} / {ours / (copy + untar):.2f}"
        f"  ({image.size / 2**20:.0f} MiB unpacked, {len(image.layers)} layer)"
    )


def disk_cost(archive: Path, work: Path, store: LayerStore) -> None:
    print("3. disk: two images sharing the Python image's base layer")
    base = store.resolve(PYTHON_IMAGE)
    names = []
    for which in ("a", "b"):
        # The base's layer blob, then one of its own: an OCI layout by umoci.
        layout = work / f"layout-{which}"
        reference = f"oci-archive:{archive}:{PYTHON_IMAGE}"
        subprocess.run(["skopeo", "copy", "--quiet", reference, f"oci:{layout}:x"], check=True)
        extra = work / f"extra-{which}"
        (extra / "srv").mkdir(parents=True)
        (extra / "srv" / f"{which}.txt").write_text(which * 1000)
        tarball = work / f"extra-{which}.tar"
        subprocess.run(["tar", "-C", str(extra), "-cf", str(tarball), "srv"], check=True)
        subprocess.run(
            ["umoci", "raw", "add-layer", "--image", f"{layout}:x", str(tarball)], check=True
        )
        pull(f"oci:{layout}:x", PullOptions(name=f"bench/{which}:1"), store)
        names.append(f"bench/{which}:1")
    images = [store.resolve(name) for name in names]
    apart = sum(image.size for image in images)
    print(
        f"   stored {store.usage() / 2**20:.1f} MiB for images of "
        f"{', '.join(f'{i.size / 2**20:.1f}' for i in images)} MiB (sum {apart / 2**20:.1f}; "
        f"base {base.size / 2**20:.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--archive", type=Path, help="python-sci's OCI archive (else built)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cellblock-bench-images-"))
    work.chmod(0o755)
    try:
        os.environ["CELLBLOCK_STORE"] = str(work / "store")
        store = LayerStore()
        pull(five_layers(work / "five"), PullOptions(name="bench/five:1"), store)
        cell_cost("bench/five:1", args.iterations)
        if args.archive is None:
            subprocess.run(
                [str(REPO / "scripts" / "build-images"), "--out", str(work), "python-sci"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            args.archive = work / "cellblock-python-sci.oci.tar"
        pull_cost(args.archive, work, store)
        disk_cost(args.archive, work, store)
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
