"""How the command line shows results: aligned tables, money to the settle coin's 8 decimals, exact decimals
without trailing zeros. The one formatter: every command that prints a table or an amount uses these."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from papertape.core.money import SETTLE_UNIT

DECIMAL_TEXT = re.compile(r"^-?\d+(\.\d+)?$")  # plain decimal text: no exponent, NaN or infinity
# Columns of the archive's tables, by how a table shows them (JSON keeps every decimal exact).
MONEY_COLUMNS = ("equity", "cash", "realized_pnl", "unrealized_pnl", "fees", "funding")  # 8 decimals
EXACT_COLUMNS = ("qty", "avg_price", "mark")  # as they are, without trailing zeros
RATIO_COLUMNS = ("confidence", "risk_score", "opportunity_score")  # 4 decimals


def money(value: Any) -> str:
    """Money as the settle coin shows it: 8 decimals, no exponent; integers and non-numbers as they are."""
    text = str(value)
    try:
        d = Decimal(text)
    except (InvalidOperation, ValueError):
        return text
    if d == d.to_integral_value() and "." not in text and "E" not in text:
        return text
    return f"{d.quantize(SETTLE_UNIT):f}"


def exact(value: Any) -> Any:
    """A decimal (or plain decimal text) without trailing zeros and without exponent; other values as they are."""
    if isinstance(value, str) and DECIMAL_TEXT.match(value):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        return value
    return f"{value.normalize():f}" if value else "0"


def for_display(result: dict, exact_values: bool = False) -> dict:
    """A query result with its decimals without trailing zeros (JSON: `exact_values`); for a table, money to 8
    decimals, ratios to 4 and lists joined."""

    def fix(column: str, v: Any) -> Any:
        if v is None:
            return None
        if column in MONEY_COLUMNS:
            return exact(v) if exact_values else money(v)
        if column in EXACT_COLUMNS:
            return exact(v)
        if column in RATIO_COLUMNS and not exact_values:
            return round(float(v), 4)
        if isinstance(v, list) and not exact_values:
            return ", ".join(map(str, v))
        return v

    rows = [[fix(c, v) for c, v in zip(result["columns"], row)] for row in result["rows"]]
    return {**result, "rows": rows}


def format_table(result: dict, max_width: int = 60) -> str:
    """The result (query_local/query_remote's dict) as an aligned text table, numbers right-aligned."""
    columns = result["columns"]
    types = result.get("types") or [""] * len(columns)  # without types everything is left-aligned
    numeric = [t.removeprefix("Nullable(").startswith(("Int", "UInt", "Float", "Decimal")) for t in types]
    cells = [[_cell(v, max_width) for v in row] for row in result["rows"]]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    n = len(cells)
    out.append(f"({n} row{'' if n == 1 else 's'})")
    return "\n".join(out)


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, (str, int, float, Decimal)):
        text = str(value)
    else:
        text = json.dumps(value, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def utc_time(ms: int | None) -> str:
    """Event time (ms since epoch) as ISO 8601 UTC, to the millisecond."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def duration(ms: float | None) -> str:
    """A length of time as 2d 03:04:05 (or 03:04:05.250 under a day)."""
    if ms is None:
        return ""
    days, rest = divmod(float(ms), 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    clock = f"{int(h):02d}:{int(m):02d}:{rest / 1000:06.3f}".removesuffix(".000")
    return f"{int(days)}d {clock}" if days else clock


def period(ms: int) -> str:
    """A period length the way people write it: 1d, 4h, 1m, 30s."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def metric(kind: str, value: Any) -> str:
    """A metric's value for a table, by its kind (papertape.core.metrics.definitions)."""
    if value is None:
        return ""
    if kind == "percent":
        return f"{float(value) * 100:.4f} %"
    if kind == "ratio":
        return f"{float(value):.4f}"
    if kind == "money":
        return money(value)
    if kind == "time":
        return utc_time(int(value))
    if kind == "duration":
        return duration(value)
    return str(value)
