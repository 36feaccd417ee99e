"""Deploy times on the lab: a fresh full deploy of db, app and monitor, then a no-change
redeploy (target: <= 15 s for 3 hosts), each with the number of changed operations. The
reference, measured in the same run, is pyinfra's floor on the same hosts: connect and read
one fact (`pyinfra inventories/lab.py fact server.Hostname`).

    .venv/bin/python bench/deploy_times.py            # takes the lab down and up first
    .venv/bin/python bench/deploy_times.py --reuse    # time a redeploy of the running lab only
    .venv/bin/python bench/deploy_times.py --data firewall_enabled=False   # without a part

Figures only; the lab is left up (take it down with `sparkops lab down`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys import release  # noqa: E402
from lab import config, control  # noqa: E402
from testkit import pyinfra_runner as runner  # noqa: E402

REDEPLOY_TARGET_SECONDS = 15.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="skip the fresh deploy")
    parser.add_argument("--redeploys", type=int, default=3, help="no-change runs to time")
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pyinfra --data override for every run (e.g. firewall_enabled=False)",
    )
    args = parser.parse_args()
    extra = tuple(arg for item in args.data for arg in ("--data", item))

    release_id, tarball = release.selected()  # built before timing: not part of a deploy
    env = {"SPARKOPS_RELEASE_TAR": str(tarball)}
    print(f"release {release_id}")
    if not args.reuse:
        control.down(log=lambda _m: None)
        up = control.up(config.DEFAULT_HOSTS, log=lambda _m: None)
        print(f"lab up (3 hosts): {up.seconds:.1f} s")
        fresh = runner.run_site(env=env, extra_args=extra)
        if fresh.returncode != 0:
            print(fresh.output[-4000:], file=sys.stderr)
            return 1
        print(f"fresh full deploy: {fresh.seconds:.1f} s, {fresh.changed} changed operations")
    times = []
    for _ in range(args.redeploys):
        again = runner.run_site(env=env, extra_args=extra)
        if again.returncode != 0:
            print(again.output[-4000:], file=sys.stderr)
            return 1
        times.append(again.seconds)
        print(f"no-change redeploy: {again.seconds:.1f} s, {again.changed} changed operations")
    floor = []
    for _ in range(args.redeploys):
        started = time.monotonic()
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "pyinfra"),
                "-y",
                "inventories/lab.py",
                "fact",
                "server.Hostname",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 1
        floor.append(time.monotonic() - started)
    print(f"reference (connect + one fact, 3 hosts): best {min(floor):.1f} s")
    best = min(times)
    verdict = "meets" if best <= REDEPLOY_TARGET_SECONDS else "MISSES"
    print(
        f"no-change redeploy best {best:.1f} s, median {sorted(times)[len(times) // 2]:.1f} s: "
        f"{verdict} the {REDEPLOY_TARGET_SECONDS:.0f} s target "
        f"(ratio {best / REDEPLOY_TARGET_SECONDS:.2f}); {best / min(floor):.1f}x the reference"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
