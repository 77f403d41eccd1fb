"""How the command line shows results: aligned tables, money to the settle coin's 8 decimals, exact decimals
without trailing zeros. The one formatter: every command that prints a table or an amount uses these."""
from __future__ import annotations

import json
import re
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
