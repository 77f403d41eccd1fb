"""DEX execution model: token/USD swaps against a constant-product (Uniswap v2, x*y=k) pool centred on the
oracle (CoinGecko) price, plus a flat per-chain gas cost in USD.

Every swap is priced against a fresh pool whose reserves are y = depth_usd (USD) and x = depth_usd / oracle_price
(token), i.e. the pool's spot price equals the oracle price; the pool does not remember earlier paper swaps.

Precision: the pool arithmetic runs in a local Decimal context of 50 significant digits (well above the 28 of the
default context, so a 1e-8 quote on a 1e12 USD pool is still exact to the settle unit). Quote amounts are then
rounded to the settle unit (1e-8 USD) against the trader: a buy's USD in rounds up, a sell's USD out rounds down,
so the pool's k never decreases. avg_price and impact_bps are left at that 50-digit precision (callers round to a
tick if they need to).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Context, Decimal, localcontext

from papertape.core.money import SETTLE_UNIT
from schemas.vocabulary import Side

PRECISION = 50
_BPS = Decimal(10000)

# Typical cost of one Uniswap swap (router call, ~120k-180k gas) in USD, 2025-2026 (assumptions, see the report):
#   ethereum: ~150k gas x ~3 gwei x ~3,300 USD/ETH ~ 1.50 USD (public trackers quote 0.50-3 USD in calm markets);
#   arbitrum: ~0.03-0.15 USD per swap after EIP-4844 blobs (Mar 2024) -> 0.05;
#   base: ~0.001-0.01 USD per swap after EIP-4844 -> 0.01 (the upper end, to stay conservative).
DEFAULT_GAS_USD: dict[str, Decimal] = {
    "ethereum": Decimal("1.50"),
    "arbitrum": Decimal("0.05"),
    "base": Decimal("0.01"),
}


@dataclass(frozen=True)
class DexSettings:
    chain: str = "ethereum"  # chain of a token not named in token_chains
    gas_usd: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_GAS_USD))  # chain -> USD per swap
    token_chains: dict[str, str] = field(default_factory=dict)  # symbol -> chain
    pool_depth_usd: Decimal = Decimal(1_000_000)  # USD value of EACH side of the pool
    pool_depth: dict[str, Decimal] = field(default_factory=dict)  # symbol -> USD per side
    pool_fee: Decimal = Decimal("0.003")  # LP fee, taken from the input amount (Uniswap v2: 0.3%)

    def chain_of(self, symbol: str) -> str:
        return self.token_chains.get(symbol, self.chain)

    def depth(self, symbol: str) -> Decimal:
        return self.pool_depth.get(symbol, self.pool_depth_usd)


def gas_cost(settings: DexSettings, symbol: str) -> Decimal:
    """USD gas of one swap of `symbol` on its chain; KeyError for a chain with no gas price."""
    chain = settings.chain_of(symbol)
    try:
        return settings.gas_usd[chain]
    except KeyError:
        raise KeyError(f"no gas price for chain {chain!r} (token {symbol})") from None


@dataclass(frozen=True)
class Swap:
    avg_price: Decimal  # quote_amount / qty, USD per token
    quote_amount: Decimal  # USD paid (buy) or received (sell), on the settle unit
    impact_bps: Decimal  # adverse move vs the oracle, fee included: > 0 for both sides


def _ctx() -> Context:
    return Context(prec=PRECISION)


def amount_in(reserve_in: Decimal, reserve_out: Decimal, amount_out: Decimal, fee: Decimal) -> Decimal:
    """Uniswap v2 getAmountIn without integer rounding: input needed to take `amount_out` (< reserve_out)."""
    if not 0 < amount_out < reserve_out:
        raise ValueError(f"amount out {amount_out} must be positive and below the reserve {reserve_out}")
    with localcontext(_ctx()):
        return reserve_in * amount_out / ((reserve_out - amount_out) * (1 - fee))


def amount_out(reserve_in: Decimal, reserve_out: Decimal, amount_in_: Decimal, fee: Decimal) -> Decimal:
    """Uniswap v2 getAmountOut without integer rounding: output for putting `amount_in_` (> 0) in."""
    if not amount_in_ > 0:
        raise ValueError(f"amount in {amount_in_} must be positive")
    with localcontext(_ctx()):
        net = amount_in_ * (1 - fee)
        return reserve_out * net / (reserve_in + net)


def swap(side: Side, qty: Decimal, oracle_price: Decimal, depth_usd: Decimal, pool_fee: Decimal) -> Swap:
    """Buy (exact output) or sell (exact input) `qty` tokens against USD on a pool centred on `oracle_price`.

    ValueError: unknown side, non-positive qty / price / depth, fee outside [0, 1), or a buy of qty >= the pool's
    token reserve."""
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
    if not (qty > 0 and oracle_price > 0 and depth_usd > 0):
        raise ValueError(f"qty {qty}, oracle price {oracle_price} and depth {depth_usd} must be positive")
    if not 0 <= pool_fee < 1:
        raise ValueError(f"pool fee {pool_fee} must be in [0, 1)")
    with localcontext(_ctx()):
        y = depth_usd
        x = depth_usd / oracle_price
        if side == "buy":
            if qty >= x:
                raise ValueError(f"cannot buy {qty}: the pool holds {x} tokens")
            quote = amount_in(y, x, qty, pool_fee).quantize(SETTLE_UNIT, rounding=ROUND_UP)
        else:
            quote = amount_out(x, y, qty, pool_fee).quantize(SETTLE_UNIT, rounding=ROUND_DOWN)
        avg = quote / qty
        move = avg - oracle_price if side == "buy" else oracle_price - avg
        return Swap(avg, quote, move / oracle_price * _BPS)
