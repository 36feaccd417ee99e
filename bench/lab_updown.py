"""How long the lab takes: building the host image (when not cached), `up` of the three
default hosts (until every host answers SSH), and `down` (until nothing is left).

Up and down are repeated `--rounds` times; the median and the range are printed. With
`--rebuild-image` the image is built into a fresh temporary cache first, so the build time is
measured even when the real cache is warm (costs about a minute and the mirror's bandwidth).

    .venv/bin/python bench/lab_updown.py [--rounds 3] [--rebuild-image]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import config, control, image, state
from lab.errors import LabError


def quiet(_message: str) -> None:
    pass


def build_image_fresh() -> float:
    with tempfile.TemporaryDirectory(prefix="sparkops-lab-bench-", dir="/var/tmp") as tmp:
        previous = os.environ.get("SPARKOPS_LAB_CACHE")
        os.environ["SPARKOPS_LAB_CACHE"] = tmp
        try:
            started = time.monotonic()
            image.ensure_image(quiet)
            return time.monotonic() - started
        finally:
            if previous is None:
                del os.environ["SPARKOPS_LAB_CACHE"]
            else:
                os.environ["SPARKOPS_LAB_CACHE"] = previous


def figure(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):6.2f}s  "
        f"(min {min(values):.2f}s, max {max(values):.2f}s, n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="up/down cycles to time")
    parser.add_argument(
        "--rebuild-image", action="store_true", help="time an image build from nothing first"
    )
    args = parser.parse_args()
    if state.read_hosts() is not None:
        print("a lab is up already; run `sparkops lab down` first", file=sys.stderr)
        return 2
    try:
        if args.rebuild_image:
            print(f"image build (debootstrap + packages): {build_image_fresh():6.2f}s")
        _path, built = image.ensure_image(quiet)
        if built is not None:
            print(f"image build (cache was empty):        {built:6.2f}s")
        elif not args.rebuild_image:
            print("image build:                          cached (use --rebuild-image to time it)")
        ups, downs = [], []
        for _ in range(args.rounds):
            result = control.up(config.DEFAULT_HOSTS, log=quiet)
            if result.already_up:
                raise LabError("the lab was still up after down: this is a bug in down")
            ups.append(result.seconds)
            downs.append(control.down(log=quiet))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        control.down(log=quiet)
        return 1
    hosts = len(config.DEFAULT_HOSTS)
    print(f"lab up ({hosts} hosts, until ssh answers):  {figure(ups)}")
    print(f"lab down (nothing left):                {figure(downs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
