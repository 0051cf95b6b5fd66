"""One migrator for both dialects: plain `.sql` files in `migrations/<dialect>/`, numbered
`NNNN_what.sql`, applied in order in one transaction, each version recorded in
`schema_migrations`. Append new files; never edit an applied one."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from superscale.jobs.dialect import Dialect

_FILE = re.compile(r"^(\d{4})_\w+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(dialect: str) -> list[Migration]:
    """The dialect's migrations, in version order."""
    folder = resources.files("superscale.jobs").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(int(match[1]), entry.name, _statements(entry.read_text("utf-8")))
            )
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations/{dialect}: versions must run 1, 2, 3 … without gaps")
    return found


def _statements(text: str) -> tuple[str, ...]:
    """Statements end with `;` at the end of a line (our files put no `;` inside strings),
    except inside a body: a SQLite trigger's (a line ending in BEGIN, to the line `END;`) or a
    PostgreSQL function's (between `$$` lines)."""
    statements: list[str] = []
    current: list[str] = []
    in_trigger = in_function = False
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        stripped = line.strip().upper()
        if stripped.count("$$") % 2:
            in_function = not in_function
        if stripped.endswith("BEGIN") and not in_function:
            in_trigger = True
        elif in_trigger and stripped == "END;":
            in_trigger = False
        if stripped.endswith(";") and not (in_trigger or in_function):
            statements.append("\n".join(current).strip().removesuffix(";"))
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return tuple(statements)


def migrate(dialect: Dialect) -> int:
    """Bring the database up to date; servers starting together apply each migration once.
    Returns the schema version."""
    with dialect.transaction() as conn:
        dialect.lock(conn, "migrations")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        current = int(row.fetchone()["v"])
        pending = [m for m in migrations(dialect.name) if m.version > current]
        for migration in pending:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES "
                + ("(:v, :t)" if dialect.paramstyle == "named" else "(%(v)s, %(t)s)"),
                {"v": migration.version, "t": time.time()},
            )
        return pending[-1].version if pending else current
