"""The gateway's database as the suite sees it: tables reflected from the live schema, never imported."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import MetaData, Table, Text, cast, create_engine, literal, or_, select
from sqlalchemy.engine import Connection, Engine

from support.harness.config import SuiteSetupError
from support.harness.redaction import mask_url


class Database:
    def __init__(self, url: str | None):
        self.url = url
        self._engine: Engine | None = None
        self._metadata: MetaData | None = None

    @property
    def engine(self) -> Engine:
        if self.url is None:
            raise AssertionError("This step reads or seeds the gateway's database, but the stack gave no database "
                                 "address: pass -D database_url=... for an external stack.")
        if self._engine is None:
            connect_args = {"timeout": 30} if self.url.startswith("sqlite") else {}
            self._engine = create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        return self._engine

    def schema(self) -> MetaData:
        """The live schema, reflected once per run (the gateway migrates before it serves, so it holds still)."""
        if self._metadata is None:
            metadata = MetaData()
            try:
                metadata.reflect(self.engine)
            except Exception as exc:
                raise SuiteSetupError(f"cannot read the gateway's schema at {mask_url(self.url)} "
                                      f"({type(exc).__name__}); check -D database_url") from None
            self._metadata = metadata
        return self._metadata

    def table(self, name: str) -> Table:
        tables = self.schema().tables
        if name not in tables:
            raise AssertionError(f"The gateway's database has no table '{name}'; tables seen: "
                                 f"{', '.join(sorted(tables))}")
        return tables[name]

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection whose reads all see the database at one moment, so figures the gateway writes together
        (a balance and the entries behind it) are never read half before and half after one of its writes."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")  # the driver starts no transaction for reads: WAL's snapshot needs one
            else:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                yield conn
            finally:
                conn.rollback()

    def columns_holding(self, value: str) -> list[str]:
        """Every table.column in which `value` appears."""
        metadata = self.schema()
        found = []

        def holding(column):
            return cast(column, Text).contains(value, autoescape=True)

        with self.engine.connect() as conn:
            for table in metadata.sorted_tables:
                # One scan per table; only a table that holds it is looked at column by column.
                if conn.execute(select(literal(1)).select_from(table).where(or_(*map(holding, table.columns)))
                                .limit(1)).first() is None:
                    continue
                for column in table.columns:
                    if conn.execute(select(column).where(holding(column)).limit(1)).first() is not None:
                        found.append(f"{table.name}.{column.name}")
        return found

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
