"""Which jobs `sparkops dashboards livecheck` requires by default: every job the dashboard and
the alerts read, the Patroni cluster's only where Prometheus scrapes them."""

from __future__ import annotations

from alerts import config
from signoff import livecheck


def test_a_single_host_does_not_require_the_cluster_jobs():
    checks = livecheck.all_checks()
    required = livecheck.default_required_jobs(checks, scraped={config.JOB_APP})
    assert config.JOB_APP in required and config.JOB_POSTGRES in required
    assert not required & livecheck.CLUSTER_JOBS


def test_a_cluster_requires_the_cluster_jobs_it_scrapes():
    checks = livecheck.all_checks()
    required = livecheck.default_required_jobs(
        checks, scraped={config.JOB_APP, config.JOB_PATRONI, config.JOB_ETCD}
    )
    assert required >= livecheck.CLUSTER_JOBS
