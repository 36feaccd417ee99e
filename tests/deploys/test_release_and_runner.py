"""The release id, the target-Python requirement scan, and reading pyinfra's results table."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest

from deploys import pgbouncer, release, support
from testkit import pyinfra_runner as runner


def _tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "spark-ops"\nversion = "1.2.3"\n')
    (root / "app" / "main.py").write_text("print('v1')\n")
    return root


def test_release_id_follows_the_sources_only(tmp_path):
    root = _tree(tmp_path / "src")
    first = release.release_id(root)
    assert first.startswith("1.2.3-") and first == release.release_id(root)
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    assert release.release_id(root) == first
    (root / "app" / "main.py").write_text("print('v2')\n")
    assert release.release_id(root) != first


def _wheel(directory: Path, name: str, requires: list[str]) -> None:
    dist = name.replace("-", "_")
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(directory / f"{dist}-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{dist}-1.0.dist-info/METADATA", metadata)


def test_requirements_for_the_hosts_python_are_found(tmp_path):
    _wheel(tmp_path, "redis", ['async-timeout>=4.0.3; python_full_version < "3.11.3"'])
    _wheel(
        tmp_path,
        "spark-ops",
        ["redis>=5", 'pytest; extra == "dev"', 'tomli; python_version < "3.11"'],
    )
    assert release.missing_for_target(tmp_path) == ["async-timeout>=4.0.3"]
    _wheel(tmp_path, "async-timeout", [])
    assert release.missing_for_target(tmp_path) == []


def test_pinned_release_tarball_must_be_a_release(tmp_path, monkeypatch):
    bogus = tmp_path / "x.tar"
    bogus.write_text("not a tar")
    monkeypatch.setenv("SPARKOPS_RELEASE_TAR", str(bogus))
    with pytest.raises(release.ReleaseError, match="not a release tarball"):
        release.selected()


TABLE = """
--> Results:
    Operation                              Hosts   Success   Error   No Change
    Common | Install base packages         3       1         -       2
    Spark app | Install release 0.1.0-x    1       -         1       -
    Grand total                            4       1         1       2
"""


def test_runner_reads_the_results_table():
    assert runner.parse(TABLE) == (4, 1, 1)
    result = runner.RunResult(0, 1.0, 4, 1, 1, TABLE)
    assert result.changed_operations() == ["Common | Install base packages"]
    clean = TABLE.replace("3       1         -       2", "3       -         -       3")
    assert runner.RunResult(0, 1.0, *runner.parse(clean), clean).changed_operations() == []
    with pytest.raises(ValueError, match="no results table"):
        runner.parse("--> pyinfra error: No hosts remaining!")


def test_a_new_pgbouncer_listen_address_changes_the_unit_drop_in():
    def drop_in(address: str) -> str:
        return support.render(
            "pgbouncer/override.conf.j2", listen=pgbouncer.listen(address), hardening=[]
        )

    one, other = drop_in("10.0.0.10"), drop_in("10.0.0.99")
    assert one != other  # -> the deploy restarts pgBouncer instead of reloading it
    assert "RuntimeDirectory=pgbouncer" in one


def test_a_readme_edit_or_a_control_plane_change_is_not_a_new_release(tmp_path):
    """The release id digests what ships (deploys/release.py SOURCE_DIRS), nothing else: the
    README, the lab, the dashboards or the deploys change no app host."""
    root = _tree(tmp_path / "src")
    (root / "README.md").write_text("# Spark Ops\n")
    for top in ("lab", "dashboards", "deploys", "testkit"):
        (root / top).mkdir()
        (root / top / "x.py").write_text("X = 1\n")
    first = release.release_id(root)
    (root / "README.md").write_text("# Spark Ops, reworded\n")
    for top in ("lab", "dashboards", "deploys", "testkit"):
        (root / top / "x.py").write_text("X = 2\n")
    assert release.release_id(root) == first
    (root / "app" / "main.py").write_text("print('v2')\n")
    assert release.release_id(root) != first


def test_a_renamed_release_differs_from_its_source_in_its_id_only(tmp_path, monkeypatch):
    src_dir = tmp_path / "1.2.3-abc"
    (src_dir / "wheels").mkdir(parents=True)
    (src_dir / "wheels" / "app.whl").write_bytes(b"wheel bytes")
    (src_dir / "RELEASE").write_text("1.2.3-abc\n")
    tarball = src_dir / "release.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(src_dir / "RELEASE", arcname="RELEASE")
        tar.add(src_dir / "wheels", arcname="wheels")
    renamed = release.renamed(tarball, "1.2.3-abc-b")
    assert renamed == tmp_path / "1.2.3-abc-b" / "release.tar"
    monkeypatch.setenv("SPARKOPS_RELEASE_TAR", str(renamed))
    assert release.selected()[0] == "1.2.3-abc-b"  # as the deploy reads it
    with tarfile.open(renamed) as tar:
        assert sorted(tar.getnames()) == ["RELEASE", "wheels", "wheels/app.whl"]
        assert tar.extractfile("wheels/app.whl").read() == b"wheel bytes"
    assert release.renamed(tarball, "1.2.3-abc-b") == renamed  # made once
