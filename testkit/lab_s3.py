"""The lab's S3 repository endpoint, on this machine: moto's server mode on loopback behind
Debian's stunnel4, with a throwaway lab CA.

Why stunnel: pgBackRest 2.45 speaks only TLS to S3 and checks the certificate's DNS name,
and moto's own TLS fails with pgBackRest ("unexpected eof while reading": moto closes TLS
without close_notify). stunnel terminates TLS cleanly on the lab bridge with a certificate
for LAB_S3_NAME; the db hosts resolve that name through /etc/hosts and trust the lab CA
(pgBackRest's repo1-storage-ca-file). The machine running pyinfra prepares the bucket
against moto directly on loopback.

    with LabS3(bridge_ip).start() as s3:       # the S3 lab test does this
        env = {"SPARKOPS_LAB_S3": str(s3.data_file)}   # read by inventories/group_data/lab.py

moto keeps the bucket in memory: it lives as long as this object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sparkops import programs
from sparkops.wait import wait_until
from testkit.proc import free_port, port_open, stop_process

LAB_S3_NAME = "s3.sparklab"
LAB_S3_TLS_PORT = 9443
LAB_S3_REGION = "eu-central-1"
LAB_S3_BUCKET = "spark-lab-pgbackrest"
HOST_CA_FILE = "/etc/pgbackrest/lab-s3-ca.crt"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_certificates(workdir: Path, name: str = LAB_S3_NAME) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a CA and a server certificate for `name`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "7",
        "-subj",
        "/CN=Spark Ops lab CA",
        cwd=workdir,
    )
    _openssl(
        "req",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={name}",
        cwd=workdir,
    )
    (workdir / "san.ext").write_text(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "7",
        "-extfile",
        "san.ext",
        cwd=workdir,
    )
    return workdir / "ca.crt", workdir / "server.crt", workdir / "server.key"


@dataclass
class LabS3:
    bridge_ip: str
    tls_port: int = LAB_S3_TLS_PORT
    moto_port: int = 0
    workdir: Path | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def data_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "pgbackrest_s3.json"

    def start(self, timeout: float = 30.0) -> LabS3:
        for program in ("openssl", "stunnel4"):
            programs.require(program)  # names the package instead of a FileNotFoundError
        self.workdir = Path(tempfile.mkdtemp(prefix="sparkops-lab-s3-"))
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        assert self.workdir is not None
        ca, cert, key = make_certificates(self.workdir)
        self.moto_port = self.moto_port or free_port()
        moto_log = open(self.workdir / "moto.log", "w")  # noqa: SIM115 (owned by the process)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
                # Path-style only: moto would read "s3" of s3.sparklab as a bucket name.
                env={**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"},
                stdout=moto_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        conf = self.workdir / "stunnel.conf"
        conf.write_text(
            "foreground = yes\npid =\n"
            f"output = {self.workdir / 'stunnel.log'}\n"
            "[s3]\n"
            f"accept = {self.bridge_ip}:{self.tls_port}\n"
            f"connect = 127.0.0.1:{self.moto_port}\n"
            f"cert = {cert}\nkey = {key}\n"
        )
        self.procs.append(
            subprocess.Popen(
                ["stunnel4", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        for port, host in ((self.moto_port, "127.0.0.1"), (self.tls_port, self.bridge_ip)):
            wait_until(
                lambda p=port, h=host: self._alive() and port_open(h, p),
                timeout=timeout,
                what=f"lab S3 on {host}:{port}",
            )
        self.data_file.write_text(json.dumps(self.group_data(ca), indent=2))

    def _alive(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        return True

    def group_data(self, ca: Path) -> dict:
        """`pgbackrest_s3` for inventories/group_data/lab.py."""
        return {
            "bucket": LAB_S3_BUCKET,
            "endpoint": LAB_S3_NAME,
            "port": self.tls_port,
            "region": LAB_S3_REGION,
            "ca_file": HOST_CA_FILE,
            "ca_cert_src": str(ca),
            "endpoint_address": self.bridge_ip,
            "controller_endpoint": f"http://127.0.0.1:{self.moto_port}",
            "wal_noncurrent_days": 14,
            # The db hosts' keys are made through moto's IAM API (which stores users,
            # policies and keys but does not enforce the policies on S3 requests).
            "iam_endpoint": f"http://127.0.0.1:{self.moto_port}",
            # moto honours aws:SecureTransport on object requests, but stunnel hands it plain
            # HTTP: a TLS-only policy would refuse the db hosts' TLS requests here.
            "tls_only": False,
        }

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> LabS3:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
