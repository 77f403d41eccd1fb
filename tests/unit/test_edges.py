"""Edges without a broker: checkpoint chunks (the alert relay: tests/unit/test_alert_relay.py)."""
from agents.checkpoint import join_snapshot, split_snapshot


def test_checkpoint_snapshots_of_any_size_go_out_in_chunks_and_survive_a_torn_save():
    table: dict[bytes, bytes] = {}
    first = bytes(range(256)) * 1000  # 256,000 bytes
    for key, value in split_snapshot(first, 3, None, chunk_bytes=100_000):
        assert len(value) <= 100_000
        table[key] = value
    assert join_snapshot(table.get, 3) == first
    second = b"x" * 250_001
    writes = split_snapshot(second, 3, join_snapshot(table.get, 3, header=True), chunk_bytes=100_000)
    for key, value in writes[:-1]:  # torn: the chunks are written, the header is not
        table[key] = value
    assert join_snapshot(table.get, 3) == first  # the previous snapshot is still whole
    table[writes[-1][0]] = writes[-1][1]
    assert join_snapshot(table.get, 3) == second
    assert join_snapshot(table.get, 4) is None
