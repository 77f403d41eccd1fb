"""The metrics table's writer (streams/sinks/metrics.py): which sessions are due, without ClickHouse."""
import pytest

from papertape.config import MetricsSettings
from streams.sinks.metrics import MetricsWriter
from streams.sinks.rows import COLUMNS


def rows_of(table: str, session: str) -> dict[str, list]:
    row = [None] * len(COLUMNS[table])
    row[COLUMNS[table].index("session")] = session
    return {table: [row]}


async def test_rows_written_during_a_refresh_leave_the_session_due():
    """The recorder writes a session's last rows while its metrics are being computed from the rows before: the
    session must stay due (a CI run once kept a table row that missed the run's last 10 s)."""
    writer = MetricsWriter(client=None, settings=MetricsSettings())
    computed = []

    def refresh(session: str) -> None:
        computed.append(session)
        if len(computed) == 1:
            writer.written(rows_of("fills_log", session))  # arrives while the first computation reads

    writer.refresh = refresh  # type: ignore[method-assign]
    writer.written(rows_of("equity_log", "s"))
    await writer.flush()
    assert computed == ["s"] and writer.dirty == {"s"}
    await writer.flush()
    assert computed == ["s", "s"] and writer.dirty == set()


async def test_a_failed_refresh_leaves_the_session_due_and_other_tables_mark_nothing():
    writer = MetricsWriter(client=None, settings=MetricsSettings())

    def refresh(session: str) -> None:
        raise ConnectionError("ClickHouse away")

    writer.refresh = refresh  # type: ignore[method-assign]
    writer.written(rows_of("funding_log", "s") | rows_of("decisions_log", "other"))
    with pytest.raises(ConnectionError):
        await writer.flush()
    assert writer.dirty == {"s"}
