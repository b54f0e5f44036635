"""Run Alembic programmatically (the CLI, the demo start-up and the tests use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` against `url` (a libpq URL)."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration this code knows (what `/ready` expects the database to be at)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head() or ""
