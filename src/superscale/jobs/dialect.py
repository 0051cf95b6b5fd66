"""What a SQL database must provide for `JobStore`: connections, transactions, a few words of
its SQL, JSON binding, locks, notifications, and its errors translated into the store's.

The job logic and every statement live once, in `store.py` and `queries.sql`; a dialect is the
thin end that knows one database (see `sqlite.py`, `postgres.py`).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal, Protocol

Row = Mapping[str, Any]  # by column name: sqlite3.Row, psycopg dict rows


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses (rows are dicts)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Connection(Protocol):
    """The part of a connection the store uses: `sqlite3.Connection` and psycopg's both fit."""

    def execute(self, query: Any, params: Any = ..., /) -> Cursor: ...


class Duplicate(Exception):
    """A row with the same unique key already exists."""


class Dialect(abc.ABC):
    """One database for `JobStore`. Thread-safe; connections come from a pool."""

    name: ClassVar[Literal["sqlite", "postgresql"]]
    # Parameter markers: `:name` (SQLite) or `%(name)s` (psycopg).
    paramstyle: ClassVar[Literal["named", "pyformat"]]
    # The dialect's words for the placeholders of queries.sql (lock_row, skip_locked, json_items,
    # no_input: an empty JSON object).
    words: ClassVar[Mapping[str, str]]

    @abc.abstractmethod
    def connection(self) -> AbstractContextManager[Connection]:
        """A pooled connection outside any transaction, for reads. Connection loss raises
        `StoreUnavailable`, a unique key violation `Duplicate`."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Connection]:
        """A pooled connection in a write transaction, committed when the block ends without
        an error and rolled back otherwise; errors translated as for `connection`."""

    @abc.abstractmethod
    def bind_json(self, value: Any) -> Any:
        """A JSON value (None stays NULL) as the driver should bind it."""

    @abc.abstractmethod
    def lock(self, conn: Connection, key: str) -> None:
        """Serialise transactions that take the same key, until this one ends. Only needed
        where write transactions do not already exclude each other."""

    @abc.abstractmethod
    def notify(self, conn: Connection, request_ids: Iterable[str]) -> None:
        """Inside a transaction: tell other processes these jobs changed, once it commits."""

    @abc.abstractmethod
    def start(self, wake: Callable[[Iterable[str] | None], None]) -> None:
        """Start delivering other processes' changes: `wake(ids)`, or `wake(None)` for all."""

    def retrying_startup(self, action: Callable[[], object]) -> None:
        """Run the store's start-up (migrations), retrying what the database asks to retry."""
        action()

    def quick(self) -> AbstractContextManager[None]:
        """Within it, reads wait only briefly for locks (raising `StoreUnavailable` rather than
        waiting longer): where reads are local and fast enough to make on an event loop."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def poll_interval(self) -> float:
        """How often a waiter re-reads its job for changes it may not be woken for."""

    @abc.abstractmethod
    def close(self) -> None: ...
