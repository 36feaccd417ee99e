"""app.migrate.revisions reads the migration files without Alembic (the rollback's planning
reads them): its answer is Alembic's own, for the files in the tree and for odd ones."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from app import migrate


def _alembic(directory=None) -> list[migrate.Revision]:
    config = migrate._config()
    if directory is not None:
        config.set_main_option("script_location", str(directory))
    script = ScriptDirectory.from_config(config)
    return [
        migrate.Revision(
            s.revision,
            s.down_revision if isinstance(s.down_revision, str) else None,
            bool(getattr(s.module, "backward_compatible", False)),
            (s.doc or "").strip(),
        )
        for s in reversed(list(script.walk_revisions()))
    ]


def test_the_revisions_are_alembics():
    ours = migrate.revisions()
    assert ours == _alembic()
    assert ours[0].down_revision is None and ours[-1].revision == migrate.head()


def _tree(tmp_path, files: dict[str, str]):
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "script.py.mako").write_text("")
    (tmp_path / "migrations" / "env.py").write_text("")
    for name, text in files.items():
        (versions / name).write_text(text)
    return tmp_path / "migrations"


ODD = {
    # Annotated, out of file-name order, a docstring of several paragraphs, a flag.
    "b.py": '"""Second.\n\nMore about it.\n"""\nrevision: str = "r2"\n'
    'down_revision: str | None = "r1"\nbackward_compatible = True\n',
    "a.py": '"""\n  First, indented.\n"""\nrevision = "r1"\ndown_revision = None\n',
    "c.py": 'revision = "r3"\ndown_revision = "r2"\n',  # no docstring
}


def test_odd_files_read_as_alembic_reads_them(tmp_path, monkeypatch):
    directory = _tree(tmp_path, ODD)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", directory)
    ours = migrate.revisions()
    assert [r.revision for r in ours] == ["r1", "r2", "r3"]
    assert ours == _alembic(directory)


def test_two_revisions_after_one_are_refused(tmp_path, monkeypatch):
    files = {**ODD}
    files["d.py"] = 'revision = "r2b"\ndown_revision = "r1"\n'
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", _tree(tmp_path, files))
    with pytest.raises(RuntimeError, match="both follow r1: the migrations must be one line"):
        migrate.revisions()


def test_a_file_that_is_no_migration_is_refused_as_alembic_refuses_it(tmp_path, monkeypatch):
    directory = _tree(tmp_path, {**ODD, "helpers.py": "X = 1\n"})
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", directory)
    with pytest.raises(RuntimeError, match=r"helpers\.py in .* sets no `revision`"):
        migrate.revisions()
    with pytest.raises(Exception, match="Could not determine revision id"):
        _alembic(directory)
