"""Start-up: a restart on a database already at the newest migration skips Alembic (gateway/__main__.py)."""
from alembic.script import ScriptDirectory

from gateway.__main__ import at_newest_revision, migrate, newest_revision
from gateway.migrate import alembic_config


def test_the_newest_revision_read_from_the_files_is_alembics_head():
    assert newest_revision() == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_only_a_database_at_the_newest_revision_skips_the_migration(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    assert not at_newest_revision(url)  # a new database: Alembic creates the schema
    migrate(url)
    assert at_newest_revision(url)
