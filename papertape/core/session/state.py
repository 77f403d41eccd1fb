"""What every part of a session shares: its config and status, which control changes, and the counter that
numbers its orders and decisions."""
from __future__ import annotations

from dataclasses import dataclass

from papertape.core.session.config import SessionConfig
from schemas.vocabulary import SessionState


@dataclass
class Run:
    cfg: SessionConfig  # a control `config` replaces it
    status: SessionState = "running"
    seq: int = 0  # numbers orders and decisions: ids stay the same when a tape is replayed

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq
