"""A throwaway Prometheus on loopback, and the exporters it scrapes in tests.

Prometheus gets a rendered scrape configuration (job names from `alerts.config`, so the
alert selectors match), the generated rule file, a short scrape interval and a TSDB in a
temporary directory. `set_targets` rewrites the configuration and reloads it with SIGHUP,
so a test can add the app's or pgBouncer exporter's target once it has started them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import yaml

from sparkops import defaults
from sparkops.wait import wait_until
from testkit.postgres import PgCluster
from testkit.proc import free_port, make_workdir, stop_process, tail_file

PROMETHEUS_BIN = "prometheus"
POSTGRES_EXPORTER_BIN = "prometheus-postgres-exporter"
NODE_EXPORTER_BIN = "prometheus-node-exporter"


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str  # host:port
    metrics_path: str = defaults.APP_METRICS_PATH


@dataclass
class Prometheus:
    targets: list[ScrapeTarget] = field(default_factory=list)
    rule_files: list[Path] = field(default_factory=list)
    scrape_interval: str = "1s"
    evaluation_interval: str = "1s"
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "prometheus.yml"

    def render_config(self) -> str:
        jobs: dict[tuple[str, str], list[str]] = {}
        for target in self.targets:
            jobs.setdefault((target.job, target.metrics_path), []).append(target.address)
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "metrics_path": path, "static_configs": [{"targets": addrs}]}
                for (job, path), addrs in sorted(jobs.items())
            ],
        }
        return yaml.safe_dump(config, sort_keys=False)

    def start(self, timeout: float = 30.0) -> Prometheus:
        self.workdir = make_workdir("prometheus")
        if not self.port:
            self.port = free_port(self.host)
        self.config_path.write_text(self.render_config())
        self._check_config()
        log = (self.workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._ready, timeout=timeout, what="Prometheus to be ready")
        return self

    def _check_config(self) -> None:
        """promtool's verdict up front: a bad config is a clear error, not a startup hang."""
        result = subprocess.run(
            ["promtool", "check", "config", str(self.config_path)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"Prometheus config rejected:\n{result.stdout}{result.stderr}")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Prometheus exited:\n{self.log_tail()}")
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def set_targets(self, targets: list[ScrapeTarget], timeout: float = 15.0) -> None:
        """Replace the scrape targets and reload; returns once Prometheus lists them all."""
        assert self.proc is not None, "start() first"
        self.targets = list(targets)
        self.config_path.write_text(self.render_config())
        self._check_config()
        self.proc.send_signal(signal.SIGHUP)
        wanted = {(t.job, t.address) for t in self.targets}
        wait_until(
            lambda: wanted <= {(t["labels"]["job"], t["labels"]["instance"])
                               for t in self.active_targets()},
            timeout=timeout,
            what="Prometheus to load the new targets",
        )  # fmt: skip

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; returns the decoded body whatever the status (errors included)."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        return response.json()

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def active_targets(self) -> list[dict]:
        return self.api("targets", state="active")["data"]["activeTargets"]

    def targets_healthy(self) -> bool:
        targets = self.active_targets()
        return bool(targets) and all(t["health"] == "up" for t in targets)

    def graph_link(self, expr: str) -> str:
        return f"{self.url}/graph?g0.expr={quote(expr)}"

    def log_tail(self, lines: int = 40) -> str:
        return tail_file(self.workdir, "prometheus.log", lines)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()


@dataclass
class PostgresExporter:
    """Debian's postgres_exporter as a child process, reading one PgCluster.

    It connects as the given role (the monitoring role in production: `pg_monitor` is
    enough) with TLS off, as the throwaway cluster has none.
    """

    cluster: PgCluster
    user: str
    password: str
    dbname: str = "postgres"
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def dsn(self) -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.cluster.host}:{self.cluster.port}/{quote(self.dbname, safe='')}"
            "?sslmode=disable"
        )

    def start(self, timeout: float = 20.0) -> PostgresExporter:
        if not self.port:
            self.port = free_port(self.host)
        assert self.cluster.workdir is not None
        self.log_path = self.cluster.workdir.parent / f"{self.cluster.workdir.name}-exporter.log"
        env = dict(os.environ, DATA_SOURCE_NAME=self.dsn())
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [POSTGRES_EXPORTER_BIN, f"--web.listen-address={self.address}",
                 "--log.level=warn"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(self._serves_pg_up, timeout=timeout, what="postgres_exporter to reach the DB")
        return self

    def _serves_pg_up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("postgres_exporter exited; see " + str(self.log_path))
        text = httpx.get(f"http://{self.address}/metrics", timeout=5).text
        return "\npg_up 1" in text

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


@dataclass
class NodeExporter:
    """Debian's node_exporter with only the textfile collector, reading `textfile_dir`: the
    way the backup job and the restore drill publish their results on the db hosts."""

    textfile_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> NodeExporter:
        if not self.port:
            self.port = free_port(self.host)
        self.proc = subprocess.Popen(
            [NODE_EXPORTER_BIN, f"--web.listen-address={self.address}",
             "--collector.disable-defaults", "--collector.textfile",
             f"--collector.textfile.directory={self.textfile_dir}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_until(self._serves, timeout=timeout, what="node_exporter to serve /metrics")
        return self

    def _serves(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("node_exporter exited")
        return httpx.get(f"http://{self.address}/metrics", timeout=5).is_success

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
