"""Bybit's private v5 REST API through pybit (issue 18, first part): keys from the environment or a file, the
environment (demo by default; mainnet only when both the settings and the caller allow it), signed requests, and
demo funds. Keys never reach a log, a message or an error text: errors name the environment and Bybit's code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from papertape.config import BybitTradingSettings

log = logging.getLogger(__name__)
DEMO_FUNDS_PATH = "/v5/account/demo-apply-money"
# what one demo-apply-money request may ask for (Bybit's demo trading docs)
DEMO_FUND_LIMITS = {"USDT": Decimal(100_000), "USDC": Decimal(100_000), "BTC": Decimal(15), "ETH": Decimal(200)}
BAD_KEY_CODES = {10003: "the API key is invalid", 10004: "the signature is wrong (is the secret right?)",
                 10005: "the key lacks a permission this needs", 10010: "this IP address is not allowed for the key"}


class BybitPrivateError(RuntimeError):
    """Bybit refused or could not be reached; the text is safe to log (no key, no secret)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BybitKeys:
    key: str = field(repr=False)
    secret: str = field(repr=False)

    @classmethod
    def load(cls, settings: BybitTradingSettings, environ: dict[str, str]) -> BybitKeys:
        """From `keys_file` (key, then secret, one a line) when set, else the two environment variables."""
        if settings.keys_file is not None:
            try:
                lines = [x.strip() for x in settings.keys_file.read_text().splitlines() if x.strip()]
            except OSError as exc:
                raise BybitPrivateError(f"cannot read the Bybit keys file {settings.keys_file}: "
                                        f"{exc.strerror}") from None
            if len(lines) != 2:
                raise BybitPrivateError(f"{settings.keys_file}: expected the key on one line and the secret on the "
                                        f"next, found {len(lines)} non-empty lines")
            return cls(lines[0], lines[1])
        key, secret = environ.get(settings.api_key_env, ""), environ.get(settings.api_secret_env, "")
        if not key or not secret:
            raise BybitPrivateError(f"no Bybit keys: set {settings.api_key_env} and {settings.api_secret_env} "
                                    f"(or [bybit_trading] keys_file)")
        return cls(key, secret)


def trading_client(settings: BybitTradingSettings, keys: BybitKeys, mainnet_flag: bool = False) -> HTTP:
    """A signed pybit session on the settings' environment. Mainnet needs `allow_mainnet` and the caller's flag
    (the command line's --mainnet): real money is never one setting away."""
    if settings.environment == "mainnet" and not (settings.allow_mainnet and mainnet_flag):
        raise BybitPrivateError("orders on Bybit mainnet need [bybit_trading] allow_mainnet = true and --mainnet on "
                                "the command line; use environment = \"demo\" for real matching with fake money")
    session = HTTP(testnet=settings.environment == "testnet", demo=settings.environment == "demo",
                   api_key=keys.key, api_secret=keys.secret, recv_window=settings.recv_window_ms, max_retries=3,
                   retry_delay=1, log_requests=False)
    if settings.rest_url is not None:
        session.endpoint = settings.rest_url.rstrip("/")  # pybit builds every URL as endpoint + "/v5/..."
    return session


def bybit_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """fn(*args, **kwargs), a pybit call, with its refusals and failures as BybitPrivateError (no key in them)."""
    try:
        return fn(*args, **kwargs)
    except InvalidRequestError as exc:  # Bybit answered with retCode != 0
        code = getattr(exc, "status_code", None)
        why = BAD_KEY_CODES.get(code, str(getattr(exc, "message", "")) or "refused") if code else "refused"
        raise BybitPrivateError(f"Bybit refused {what}: {why} (retCode {code})", code) from None
    except FailedRequestError as exc:  # HTTP status, network
        raise BybitPrivateError(f"Bybit could not be reached for {what}: {getattr(exc, 'message', '')}"[:300],
                                getattr(exc, "status_code", None)) from None


def wallet_balance(session: HTTP, coin: str = "USDT") -> Decimal:
    """The unified account's wallet balance of `coin`."""
    answer = bybit_call("the wallet balance", session.get_wallet_balance, accountType="UNIFIED", coin=coin)
    for account in answer["result"]["list"]:
        for c in account.get("coin", []):
            if c.get("coin") == coin:
                return Decimal(c.get("walletBalance") or "0")
    return Decimal(0)


def request_demo_funds(session: HTTP, coin: str, amount: Decimal) -> dict[str, Any]:
    """Demo money into the demo account. pybit's request_demo_trading_funds() sends no body, so the request is
    made here with Bybit's documented one (adjustType 0: add; utaDemoApplyMoney: the coin and amount)."""
    limit = DEMO_FUND_LIMITS.get(coin)
    if limit is None:
        raise BybitPrivateError(f"Bybit's demo funds come in {', '.join(DEMO_FUND_LIMITS)}, not {coin}")
    if not 0 < amount <= limit:
        raise BybitPrivateError(f"a demo funds request asks for more than 0 and at most {limit} {coin}, not {amount}")
    if not session.demo:
        raise BybitPrivateError("demo funds exist only on Bybit's demo environment")
    return bybit_call("the demo funds", session._submit_request, method="POST",  # noqa: SLF001 (pybit's one way in)
                 path=f"{session.endpoint}{DEMO_FUNDS_PATH}",
                 query={"adjustType": 0, "utaDemoApplyMoney": [{"coin": coin, "amountStr": format(amount, "f")}]},
                 auth=True)
