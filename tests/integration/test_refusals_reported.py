"""Issue 19: what a run refuses is said where the user looks. A Binance spot stream replayed as a USD-M one had most
of its lines refused ("no event time in line") and `papertape run` printed nothing about it: the run's summary now
counts the tape reader's refused lines and names the first reasons, and counts the dead letters per topic."""
from __future__ import annotations

import gzip

import orjson
import pytest

from papertape.app.cli import main
from papertape.config import BUNDLED_TAPE

LINES = 3000
SPOILED = (100, 200, 300)  # 1-based line numbers whose event times are taken out, as a spot stream has none


def spoiled_tape(path) -> None:
    with gzip.open(BUNDLED_TAPE[0], "rb") as src, gzip.open(path, "wb") as out:
        for number, line in enumerate(src, 1):
            if number > LINES:
                break
            if number in SPOILED:
                received, raw = line.split(b" ", 1)
                msg = orjson.loads(raw)
                for key in ("E", "T"):
                    msg["data"].pop(key, None)
                line = received + b" " + orjson.dumps(msg) + b"\n"
            out.write(line)


@pytest.mark.slow  # a replay through the whole pipeline
def test_the_run_summary_counts_and_names_the_lines_the_tape_reader_refused(tmp_path, capsys):
    tape = tmp_path / "spoiled.gz"
    spoiled_tape(tape)
    assert main(["run", "--replay", str(tape), "--data-dir", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert f"lines the tape reader refused: {len(SPOILED)} (skipped)" in printed, printed
    for number in SPOILED:
        assert f"spoiled.gz:{number}: no event time in line" in printed
