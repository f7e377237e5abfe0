"""Column types shared by the table model and the migrations.

Two needs are not met by the stock types on every dialect: timestamps must be
aware UTC datetimes in Python *and* sort and compare correctly in SQL, and
JSON should be ``jsonb`` on PostgreSQL. SQLite has no timestamp type, so
there a timestamp is fixed-width ISO text in UTC ("2024-05-01 02:30:00.000000"):
lexicographic order is then time order, so ``ORDER BY``, ``<=`` and ``max()``
stay right without any date function. PostgreSQL gets ``timestamptz``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

# SQL NULL for Python None (not the JSON literal 'null'), so IS NULL works.
JSONValue = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive values are refused.

    Refusing naive datetimes is deliberate: a naive value is ambiguous, and
    guessing its zone is how schedules drift by an hour twice a year.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"store times must be timezone-aware datetimes, got {value!r}")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if stored.tzinfo is None:  # SQLite text, or a server handing back naive values: UTC
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)
