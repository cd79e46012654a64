"""Throwaway warehouse databases for module-scoped fixtures."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from erpsync.runtime import database
from tests.conftest import make_database

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def migrated_database(server_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new database ``<prefix>_<random>`` on ``server_url`` with every warehouse
    migration applied; dropped on exit."""
    from erpsync.warehouse import migrate

    url = make_database(server_url, prefix)
    migrate.migrate(url)
    yield url
    database.drop_database(url)
