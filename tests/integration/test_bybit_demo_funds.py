"""Bybit's private API, first part of the demo venue (issue 18), against a local stand-in that checks every request
as Bybit does (key, HMAC signature, timestamp): `papertape demo fund` and `balance` sign their requests with keys
from the environment or a file, send demo-apply-money with Bybit's documented body (pybit's own method sends
none), and never print a key; a wrong secret is one clear error; mainnet needs the setting and the flag."""
from __future__ import annotations

import os
import subprocess
from decimal import Decimal

import pytest

from builders import papertape_cmd
from bybit_private_server import BybitPrivate
from papertape.config import BybitTradingSettings
from streams.bybit.private import BybitKeys, BybitPrivateError, trading_client

KEY, SECRET = "stAndInKey0123456789", "stAndInSecret-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def bybit():
    server = BybitPrivate(KEY, SECRET)
    yield server
    server.close()


def demo(tmp_path, bybit, *args: str, secret: str = SECRET, keys_file: bool = False) -> subprocess.CompletedProcess:
    config = tmp_path / "papertape.toml"
    keys = tmp_path / "bybit.keys"
    keys.write_text(f"{KEY}\n{secret}\n")
    config.write_text(f'[bybit_trading]\nrest_url = "{bybit.url}"\n'
                      + (f'keys_file = "{keys}"\n' if keys_file else ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    if not keys_file:
        env |= {"BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": secret}
    return subprocess.run(papertape_cmd("demo", *args, "--config", str(config)), env=env, capture_output=True,
                          text=True, timeout=60)


def test_demo_funds_are_asked_for_with_bybit_s_body_signed(tmp_path, bybit):
    r = demo(tmp_path, bybit, "fund", "--amount", "2500.25")
    assert r.returncode == 0, r.stderr
    assert "USDT 1000.50 -> 3500.75" in r.stdout
    posts = [q for q in bybit.requests if q.method == "POST"]
    assert [(q.path, q.body, q.ret_code) for q in posts] == [
        ("/v5/account/demo-apply-money", {"adjustType": 0, "utaDemoApplyMoney": [{"coin": "USDT",
                                                                                  "amountStr": "2500.25"}]}, 0)]
    assert all(q.ret_code == 0 for q in bybit.requests) and len(bybit.requests) == 3  # balance, fund, balance
    assert bybit.balances["USDT"] == Decimal("3500.75")
    r = demo(tmp_path, bybit, "balance", keys_file=True)  # the keys from a file
    assert r.returncode == 0 and "USDT 3500.75" in r.stdout, r.stderr
    for out in (r.stdout + r.stderr,):
        assert KEY not in out and SECRET not in out


def test_a_wrong_secret_is_one_clear_error_without_the_keys(tmp_path, bybit):
    r = demo(tmp_path, bybit, "fund", "--amount", "10", secret="not-" + SECRET)
    assert r.returncode == 2
    assert "the signature is wrong" in r.stderr and "10004" in r.stderr
    assert KEY not in r.stdout + r.stderr and SECRET not in r.stdout + r.stderr
    assert [q.ret_code for q in bybit.requests] == [10004]  # nothing sent after the refusal
    assert bybit.balances["USDT"] == Decimal("1000.50")


def test_limits_and_mainnet_are_refused_before_anything_is_sent(tmp_path, bybit):
    r = demo(tmp_path, bybit, "fund", "--amount", "100000.01")
    assert r.returncode == 2 and "at most 100000 USDT" in r.stderr
    assert [q.method for q in bybit.requests] == ["GET"]  # the balance only: no fund request
    keys = BybitKeys(KEY, SECRET)
    mainnet = BybitTradingSettings(environment="mainnet", rest_url=bybit.url)
    with pytest.raises(BybitPrivateError, match="allow_mainnet = true and --mainnet"):
        trading_client(mainnet, keys)
    with pytest.raises(BybitPrivateError, match="allow_mainnet = true and --mainnet"):
        trading_client(mainnet, keys, mainnet_flag=True)  # the flag alone is not enough
    trading_client(mainnet.model_copy(update={"allow_mainnet": True}), keys, mainnet_flag=True)
    assert KEY not in repr(keys) and SECRET not in repr(keys)
    with pytest.raises(BybitPrivateError, match="no Bybit keys: set BYBIT_API_KEY and BYBIT_API_SECRET"):
        BybitKeys.load(BybitTradingSettings(), {})
