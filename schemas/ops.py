"""Operations: alerts, control of sessions, dead letters."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Message, SessionId
from .vocabulary import AlertType, Command, DeliveryOutcome, SessionState, Severity


class Alert(Message):
    kind: Literal["alert"] = "alert"
    severity: Severity
    type: AlertType = "system"
    source: str = Field(max_length=80)
    title: str = Field(max_length=200)
    text: str = Field(default="", max_length=4000)
    session: SessionId | None = None


class AlertAck(Message):
    """Someone acknowledged an alert (the API, `papertape alerts ack`). Keyed by the alert's id."""

    kind: Literal["alert_ack"] = "alert_ack"
    alert_id: str = Field(min_length=1, max_length=300)
    by: str = Field(default="", max_length=200)


class AlertDelivery(Message):
    """What one channel made of an alert, written by the relay before it commits the alert's offset: the relay's
    memory of what it delivered, read back when it restarts. Keyed by the alert's id."""

    kind: Literal["alert_delivery"] = "alert_delivery"
    alert_id: str = Field(min_length=1, max_length=300)
    channel: str = Field(min_length=1, max_length=100)
    outcome: DeliveryOutcome
    attempts: int = Field(ge=0)
    detail: str = Field(default="", max_length=1000)


class Control(Message):
    """A command for one session, applied at the engine's event time when it is read.

    start: a new session from `config` (a session config, README "Sessions"), or resume a paused one;
    pause: no new entries (resting orders, stop-loss, take-profit, max hold, funding and liquidation go on);
    resume: undo pause; stop: cancel the session's orders, close its positions at market, and end it;
    config: change settings of a running or paused session (`config` holds only the changed keys);
    reconcile: a session on an exchange asks it for a snapshot now, reconciled as the check named by this id."""

    kind: Literal["control"] = "control"
    session: SessionId
    command: Command
    config: dict[str, Any] = Field(default_factory=dict)


class SessionStatus(Message):
    """A session's state after each change: started, paused, resumed, reconfigured, stopped, a circuit breaker
    tripped or reset. `breakers` maps each tripped breaker to why; `config` is the session's whole config."""

    kind: Literal["session"] = "session"
    session: SessionId
    status: SessionState
    event: str = Field(max_length=200)  # what changed: started, paused, breaker tripped: daily_trades, ...
    strategy: str = Field(max_length=200)
    intel: int = Field(ge=1, le=10)
    breakers: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    control: str | None = Field(default=None, max_length=160)  # the id of the control this answers, if one did


class DeadLetter(Message):
    """A message an agent could not accept, with the reason. `payload` is cut to a few KiB."""

    kind: Literal["dead_letter"] = "dead_letter"
    topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str = Field(max_length=4000)
    payload: str = Field(max_length=8192)
