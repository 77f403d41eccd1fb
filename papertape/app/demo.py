"""`papertape demo fund | balance`: Bybit demo money (issue 18). The keys come from the environment or the file
the settings name, never from the command line (a shell's history keeps it)."""
from __future__ import annotations

import os
import sys
from decimal import Decimal, InvalidOperation

from papertape.config import load_settings
from streams.bybit.private import BybitKeys, BybitPrivateError, request_demo_funds, trading_client, wallet_balance


def main(args) -> int:
    settings = load_settings(args.config).bybit_trading
    try:
        session = trading_client(settings, BybitKeys.load(settings, dict(os.environ)))
        before = wallet_balance(session, args.coin)
        if args.demo_command == "balance":
            print(f"{args.coin} {before} on Bybit {settings.environment}")
            return 0
        try:
            amount = Decimal(args.amount)
        except InvalidOperation:
            raise BybitPrivateError(f"--amount {args.amount!r} is not a number") from None
        request_demo_funds(session, args.coin, amount)
        after = wallet_balance(session, args.coin)
    except BybitPrivateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.coin} {before} -> {after} on Bybit {settings.environment} (asked for {amount})")
    return 0
