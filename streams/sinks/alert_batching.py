"""What one channel is sent, decided without I/O: its filter (severity, types), storms of one (type, title) merged
into one message, and repeats of one alert key held back for a while and counted in the next message."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import schemas as s
from schemas.vocabulary import AlertType, Severity

LEVELS: dict[Severity, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}
SUBJECTS_SHOWN = 10  # of an aggregated message; the rest are counted
SUBJECT_MAX = 40  # "BTCUSDT: silent for 15 s" -> "BTCUSDT"; a longer prefix is not a subject


@dataclass(frozen=True)
class AlertFilter:
    min_severity: Severity = "info"
    types: Collection[AlertType] = ()  # empty: every type

    def accepts(self, alert: s.Alert) -> bool:
        return LEVELS[alert.severity] >= LEVELS[self.min_severity] and (not self.types or alert.type in self.types)


def repeat_key(alert: s.Alert) -> tuple[str, str, str, str | None, str]:
    """Alerts with one key are the same condition again (a rule firing anew, the same feed stale again); another
    symbol going stale, or another order refused, is another condition (its subject)."""
    return alert.type, alert.source, alert.title, alert.session, subject(alert)


def subject(alert: s.Alert) -> str:
    """What tells this alert from others of its title: the text's "subject: ..." prefix (the convention of every
    alert's text), else its session, else the start of its text."""
    head, sep, _ = alert.text.partition(": ")
    if sep and 0 < len(head) <= SUBJECT_MAX:
        return head
    return alert.session or alert.text[:SUBJECT_MAX] or alert.id


@dataclass(frozen=True)
class Digest:
    """One message to a channel: one alert, or a storm of alerts of one (type, title); `suppressed` counts the
    repeats held back since the channel's previous message."""

    alerts: tuple[s.Alert, ...]
    suppressed: int = 0

    @property
    def severity(self) -> Severity:
        return max((a.severity for a in self.alerts), key=LEVELS.__getitem__)

    @property
    def type(self) -> AlertType:
        return self.alerts[0].type

    @property
    def title(self) -> str:
        first = self.alerts[0]
        return first.title if len(self.alerts) == 1 else f"{first.title}: {len(self.alerts)} alerts"

    @property
    def text(self) -> str:
        first = self.alerts[0]
        if len(self.alerts) == 1:
            body = first.text or first.title
            meta = f"{first.severity} {first.type} alert from {first.source}, id {first.id}"
        else:
            subjects = list(dict.fromkeys(map(subject, self.alerts)))
            body = ", ".join(subjects[:SUBJECTS_SHOWN])
            if len(subjects) > SUBJECTS_SHOWN:
                body += f", ... and {len(subjects) - SUBJECTS_SHOWN} more"
            meta = f"{self.severity} {first.type} alerts from {first.source}, ids {first.id} ... {self.alerts[-1].id}"
        if self.suppressed:
            meta += f"; {self.suppressed} repeated alert{'s' if self.suppressed > 1 else ''} held back before this"
        return f"{body}\n{meta}"


@dataclass
class _Group:
    due: float
    alerts: list[s.Alert] = field(default_factory=list)


class AlertBatcher:
    """One channel's storm aggregation and repeat limit, on a clock the caller passes (seconds).

    An alert opens a group for its (type, title), or joins the open one; a group goes out `aggregate_s` after it
    opened, as one Digest (with `aggregate_s` 0, each alert alone). An alert whose key went out less than
    `repeat_s` ago is suppressed (add() says False) and counted in the next Digest."""

    def __init__(self, aggregate_s: float, repeat_s: float) -> None:
        self.aggregate_s = aggregate_s
        self.repeat_s = repeat_s
        self.groups: dict[tuple[str, str], _Group] = {}
        self.sent_at: dict[tuple[str, str, str, str | None, str], float] = {}
        self.suppressed = 0

    def add(self, alert: s.Alert, now: float) -> bool:
        sent = self.sent_at.get(repeat_key(alert))
        if sent is not None and now - sent < self.repeat_s:
            self.suppressed += 1
            return False
        key = (alert.type, alert.title) if self.aggregate_s > 0 else ("", alert.id)  # 0: every alert on its own
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(now + self.aggregate_s)
        group.alerts.append(alert)
        return True

    def next_due(self) -> float | None:
        return min((g.due for g in self.groups.values()), default=None)

    def due(self, now: float, everything: bool = False) -> list[Digest]:
        """The groups whose time has come (with `everything`, all of them), oldest first."""
        out: list[Digest] = []
        for key, group in sorted(self.groups.items(), key=lambda kv: kv[1].due):
            if group.due > now and not everything:
                break
            del self.groups[key]
            out.append(Digest(tuple(group.alerts), self.suppressed))
            self.suppressed = 0
            for alert in group.alerts:
                self.sent_at[repeat_key(alert)] = now
        if out:
            self.sent_at = {k: t for k, t in self.sent_at.items() if now - t < self.repeat_s}
        return out
