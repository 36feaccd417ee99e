"""What a switch costs the clients behind the load balancer: two app hosts, HAProxy in front
(HTTPS, the deploy's CA), each host drained through HAProxy's runtime API before it restarts.

On a lab of its own (SPARKOPS_LAB_ID; db, app, app2, lb: brought up and deployed here unless
it is up already), steady traffic from this machine through https://<lb>/ (default 80
requests/s, a new TLS connection each: half GET /readyz, half POST /orders with an API key)
during:

- deploy A->B:     the real site deploy (pyinfra) of release B (this tree's release under
                   another id): B installed on both app hosts, then the switch host by host,
                   each drained on the lb around spark-app-activate (deploys/app.py)
- rollback B->A:   `sparkops rollback --yes` (every app host in turn, drained the same way)
- failed deploy:   A->C on the first host, C cannot reach its database (/readyz 503): its
                   preflight beside the live app fails before the host is drained, nothing
                   switches; the deploy stops there (the other hosts are not switched). The
                   same steps as the deploy's switch, run from here (a release tarball cannot
                   carry a broken setting)

and prints for each: requests, failed (connection errors, 5xx, timeouts), p99 latency of the
requests started during the switch, switch time (command to done), and for the rollback the
rollback seconds (command to the old release serving through the load balancer: the first
host drained, switched, gated and back in rotation) and the runbook's own per-host figures.
Targets: 0 failed, rollback <= 5 s.

    SPARKOPS_LAB_ID=7 .venv/bin/python bench/lb_switch.py [--rate 80] [--gate-timeout 5]

Figures only; the releases it adds are removed at the end; a lab it brought up it takes down.
"""

from __future__ import annotations

import argparse
import json
import shlex
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from zero_downtime import ACCOUNTS, SETTLE_SECONDS, requests_for

from deploys import release, tlsca
from lab import control, ssh
from runbooks import balancer, sites
from runbooks.checklist import Run
from sparkops import defaults, envvars, layout
from sparkops_cli.commands.app import keys_create_on_host, secret_in
from testkit import pyinfra_runner as runner
from testkit import traffic

HOSTS = ("db", "app", "app2", "lb")
APPS = ("app", "app2")
ACTIVATE = "/usr/local/sbin/spark-app-activate"


def measured(name: str, url: str, context, secret: str, rate: float, action: Callable[[], float]):
    load = traffic.Traffic(url, requests_for(secret), rate=rate, max_seconds=300,
                           ssl_context=context)  # fmt: skip
    load.start()
    time.sleep(SETTLE_SECONDS)  # a bench, not a test: steady traffic before the switch
    begin = time.monotonic()
    extra = action()
    end = time.monotonic()
    time.sleep(SETTLE_SECONDS)
    outcomes = load.stop()
    failed = traffic.failures(outcomes)
    window = traffic.during(outcomes, begin, end)
    kinds: dict[str, int] = {}
    for o in failed:
        kind = str(o.status) if o.status else o.error.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(
        f"{name:<15} requests {len(outcomes):>5}  failed {len(failed):>4}"
        f"{' ' + str(kinds) if kinds else ''}  p99 during switch "
        f"{traffic.p99(window) * 1000:7.1f} ms ({len(window)} requests)  "
        f"switch {end - begin:5.2f} s",
        flush=True,
    )
    return len(failed), extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--gate-timeout", type=float, default=5.0)
    args = parser.parse_args()
    up = control.up(HOSTS, log=lambda _m: None)
    try:
        hosts = {h["name"]: h for h in up.hosts}
        missing = [n for n in HOSTS if n not in hosts]
        if missing:
            raise SystemExit(f"the lab that is up lacks {missing}: take it down first")
        _release_id, tarball = release.selected()
        started = time.monotonic()
        site = runner.run_site(env={"SPARKOPS_RELEASE_TAR": str(tarball)})
        assert site.returncode == 0, site.output[-4000:]
        print(f"site deploy: {time.monotonic() - started:.0f} s, {site.changed} changed")
        figures(hosts, args.rate, args.gate_timeout)
    finally:
        if not up.already_up:
            control.down(log=lambda _m: None)


def renamed_release(current: str) -> tuple[str, Path]:
    """This tree's release tarball under another id: a release B the site deploy installs and
    switches to like any new one."""
    _id, tarball = release.selected()
    name = f"{current}-lbbench"
    return name, release.renamed(tarball, name)


def figures(hosts: dict, rate: float, gate: float) -> None:
    root = layout.APP_ROOT

    def on(name: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return ssh.run(hosts[name]["ip"], command, timeout=timeout)

    accounts = ", ".join(f"('zdt-{i}', 'bench', 1000000000, 1000000000)"
                         for i in range(1, ACCOUNTS + 1))  # fmt: skip
    sql = (f"INSERT INTO accounts (id, name, opening_balance, cash_balance) VALUES {accounts} "
           "ON CONFLICT (id) DO NOTHING")  # fmt: skip
    made = on("db", f"runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} "
                    f"-c {shlex.quote(sql)}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    names = [f"zdt-{i}" for i in range(1, ACCOUNTS + 1)]
    made = on("app", keys_create_on_host(f"lb-bench-{time.time_ns()}", names,
                                          ["read", "trade"], 10_000_000))  # fmt: skip
    secret = secret_in(made.stdout)
    a = on("app", f"readlink {root}/current").stdout.strip().rsplit("/", 1)[-1]

    def copy(host: str, name: str, extra_env: str = "") -> None:
        done = on(host, f"set -e; cd {root}/releases; rm -rf {name}; cp -a {a} {name}; "
                        f"rm -f {name}/BAD; printf 'SPARK_RELEASE_ID={name}\\n{extra_env}' > "
                        f"{name}/release.env; touch {name}/.installed")  # fmt: skip
        assert done.returncode == 0, done.stderr

    release_b, tar_b = renamed_release(a)
    inventory = sites.load_inventory()
    lbs = balancer.Balancers([sites.ssh_executor("lb", inventory)])
    context = ssl.create_default_context(cafile=str(tlsca.tls_dir("lab") / tlsca.CA_CERT_FILE))
    url = f"https://{hosts['lb']['ip']}"

    def switch(release_: str, expect: int, only: tuple[str, ...]) -> Callable[[], None]:
        def go() -> None:
            for host in only:  # one at a time, as the deploy's serial switch
                # As deploys.app._drained_switch: the preflight while the host serves, then
                # the switch drained.
                gated = f"APP_READY_TIMEOUT={int(gate)}"
                done = on(host, f"{gated} APP_PREFLIGHT=only {ACTIVATE} {release_}")
                if done.returncode == 0:
                    run = Run(f"switch-{host}", quiet=True)
                    with lbs.drained(host, run):
                        done = on(host, f"{gated} APP_PREFLIGHT=no {ACTIVATE} {release_}")
                assert done.returncode == expect, f"{host}: {done.returncode} {done.stderr[-2000:]}"

        return go

    def site_deploy() -> None:
        done = runner.run_site(env={"SPARKOPS_RELEASE_TAR": str(tar_b)})
        assert done.returncode == 0 and done.errors == 0, done.output[-4000:]

    def roll_back() -> dict:
        launched = datetime.now(UTC)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "sparkops"), "rollback", "--yes", "--json",
             "--gate-timeout", str(gate)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads(done.stdout)
        hosts_ = result["facts"]["hosts"]
        # The runbook counts from its run's start; this adds what came before it (the
        # interpreter's start and the imports), so the figure starts at the command.
        before = (datetime.fromisoformat(result["started"]) - launched).total_seconds()
        for f in hosts_.values():
            if f.get("since_command_seconds") is not None:
                f["since_launch_seconds"] = round(f["since_command_seconds"] + before, 3)
        return hosts_

    print(
        f"through HAProxy on {hosts['lb']['ip']} (HTTPS, the deploy's CA) to {', '.join(APPS)}: "
        f"{rate:.0f} requests/s, a new connection each, half GET /readyz, half POST /orders; "
        f"health gate {gate:.0f} s; drain on the lb around each host's switch"
    )
    try:
        measured("deploy A->B", url, context, secret, rate, site_deploy)
        started = time.monotonic()
        failed_rb, facts = measured("rollback B->A", url, context, secret, rate, roll_back)
        whole = time.monotonic() - started - 2 * SETTLE_SECONDS
        for host in APPS:
            f = facts[host]
            print(
                f"  {host}: switch to healthy {f.get('rollback_seconds')} s, drain to serving "
                f"through the lb {f.get('lb_serving_seconds')} s, command start to serving "
                f"{f.get('since_command_seconds')} s (from the process's launch "
                f"{f.get('since_launch_seconds')} s), live {f.get('live_release')}"
            )
        first = facts[APPS[0]].get("since_launch_seconds")
        last = facts[APPS[-1]].get("since_launch_seconds")
        # Installed only now: else the rollback would take C for the release before B.
        for host in APPS:
            copy(host, "zdt-c", f"{envvars.DATABASE_URL}=postgresql://nobody@127.0.0.1:1/spark\\n")
        measured("failed deploy", url, context, secret, rate, switch("zdt-c", 1, APPS[:1]))
        print(
            f"rollback: {failed_rb} failed (target 0); command to the old release serving "
            f"through the lb {first} s (first host; target <= 5 s), {last} s (every host); "
            f"the whole process {whole:.2f} s"
        )
    finally:
        for host in APPS:
            on(host, f'[ "$(readlink {root}/current)" = releases/{a} ] || {ACTIVATE} {a}')
            on(host, f"rm -rf {root}/releases/{release_b} {root}/releases/zdt-c")


if __name__ == "__main__":
    main()
