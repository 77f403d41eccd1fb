"""Operations: alerts, control of sessions, dead letters."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Message, SessionId

Severity = Literal["info", "warning", "error", "critical"]


class Alert(Message):
    kind: Literal["alert"] = "alert"
    severity: Severity
    source: str = Field(max_length=80)
    title: str = Field(max_length=200)
    text: str = Field(default="", max_length=4000)
    session: SessionId | None = None


class Control(Message):
    kind: Literal["control"] = "control"
    session: SessionId
    command: Literal["start", "stop", "pause", "resume", "config"]
    config: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(Message):
    """A message an agent could not accept, with the reason. `payload` is cut to a few KiB."""

    kind: Literal["dead_letter"] = "dead_letter"
    topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str = Field(max_length=4000)
    payload: str = Field(max_length=8192)
