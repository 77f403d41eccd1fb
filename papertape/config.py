"""Settings: embedded defaults, overridable by a TOML file and the environment (KAFKA_BOOTSTRAP, CLICKHOUSE_URL,
PAPERTAPE_NAMESPACE, PAPERTAPE_WEBHOOK_URL, PAPERTAPE_DATA, PAPERTAPE_PROMETHEUS_HOST, PAPERTAPE_PROMETHEUS_PORT,
PAPERTAPE_API_TOKEN, PAPERTAPE_API_TOKEN_FILE)."""
from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from papertape.core.alert_rules import PriceRule
from papertape.core.instruments import DEFAULT_INSTRUMENTS, Instrument
from papertape.core.metrics.returns import DAY_MS
from papertape.core.session.config import SessionConfig
from schemas.topics import Namespace, kafka_partition
from schemas.vocabulary import AlertType, Severity

RECORDINGS = Path(__file__).resolve().parent.parent / "streams" / "recordings"
BUNDLED_TAPE = [RECORDINGS / "binance_usdm" / "usdm_btcusdt_20240808.gz",
                RECORDINGS / "binance_usdm" / "usdm_ethusdt_20240808.gz"]

RUN_SETTINGS = "worker-settings.json"  # in the data directory: the settings of the run that wrote it

DEFAULT_SESSIONS = [  # two strategies at two intel levels, side by side on the same tape
    SessionConfig(id="trend", strategy="trend_following", intel=5,
                  params={"fast": 3, "slow": 8, "bar_ms": 5_000, "full_confidence_bps": 1.0}),
    SessionConfig(id="revert", strategy="mean_reversion", intel=8, balance=25_000,
                  params={"window": 20, "bar_ms": 5_000}),
]


class BybitSettings(BaseModel):
    """The live Bybit public feed (`papertape record`, `papertape run --live`): which universe, how watched."""

    model_config = ConfigDict(extra="forbid")

    category: Literal["linear", "spot"] = "linear"
    settle_coin: str = "USDT"  # USDC perpetuals on request; for spot, the quote coin
    symbols: list[str] = Field(default_factory=list)  # only these; empty: every symbol passing the filters
    exclude: list[str] = Field(default_factory=list)
    statuses: list[str] = Field(default_factory=lambda: ["Trading"])
    min_turnover_24h: Decimal | None = None  # in the quote coin
    deep_depth: Literal[50, 200, 500] = 50  # the book depth for symbols a session names
    stale_after_s: float = Field(default=15.0, gt=0)  # a symbol silent this long is stale
    lateness_ms: int = Field(default=250, ge=0)  # how long frames wait to be put in event-time order
    max_symbols_per_connection: int = Field(default=100, ge=1, le=500)
    instruments_max_age_s: float = Field(default=86_400, gt=0)
    ws_url: str | None = None  # None: Bybit mainnet's public stream (public data is always mainnet's)
    rest_url: str | None = None  # None: Bybit mainnet's REST API


class BybitTradingSettings(BaseModel):
    """Orders on Bybit itself (issue 18): which environment, where the keys are. Demo by default (real matching,
    fake money); mainnet only with `allow_mainnet` here and `--mainnet` on the command line."""

    model_config = ConfigDict(extra="forbid")

    environment: Literal["demo", "testnet", "mainnet"] = "demo"
    allow_mainnet: bool = False
    api_key_env: str = "BYBIT_API_KEY"  # the environment variables holding the key and the secret
    api_secret_env: str = "BYBIT_API_SECRET"
    keys_file: Path | None = None  # or a file: the key on its first line, the secret on its second
    rest_url: str | None = None  # None: the environment's host (api-demo.bybit.com...); tests: a stand-in
    ws_url: str | None = None  # the private stream; None: the environment's (stream-demo.bybit.com...)
    recv_window_ms: int = Field(default=5000, gt=0, le=60_000)


class CoinGeckoSettings(BaseModel):
    """DEX token prices for live runs (`papertape run --live --tokens`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    tokens: dict[str, str] = Field(default_factory=lambda: {  # symbol -> CoinGecko coin id (the seeds' tokens)
        "WETH": "weth", "USDC": "usd-coin", "DAI": "dai", "WBTC": "wrapped-bitcoin", "UNI": "uniswap",
        "AAVE": "aave", "LINK": "chainlink", "MATIC": "matic-network", "ARB": "arbitrum"})
    every_s: float = Field(default=15.0, gt=0)  # how often to ask (the cache answers within ttl_s)
    ttl_s: float = Field(default=45.0, ge=30, le=60)
    max_age_s: float = Field(default=300.0, gt=0)  # an older price is unavailable
    base_url: str | None = None  # None: api.coingecko.com (COINGECKO_API_KEY, if set, is sent as a header)
    fallback_url: str | None = None  # None: DefiLlama's coins API


class MetricsSettings(BaseModel):
    """The performance metrics (README "Metrics"): the returns' finer step and how often the table is refreshed."""

    model_config = ConfigDict(extra="forbid")

    step_ms: int = Field(default=60_000, gt=0)  # besides UTC days; must divide a day
    refresh_s: float = Field(default=30.0, gt=0)  # wall seconds between refreshes of a session's metrics rows

    @field_validator("step_ms")
    @classmethod
    def _divides_a_day(cls, v: int) -> int:
        if DAY_MS % v:
            raise ValueError(f"metrics step_ms {v} does not divide a day ({DAY_MS} ms)")
        return v

    @property
    def periods(self) -> tuple[int, ...]:
        """UTC days, then the finer step (the finest last)."""
        return (DAY_MS,) if self.step_ms == DAY_MS else (DAY_MS, self.step_ms)


class ChannelSettings(BaseModel):
    """One alert channel of the relay (README "Alerts"): an apprise URL (tgram://, discord://, slack://, mailto://,
    ntfy://, matrix://...) or a plain JSON webhook, with the severities and types it wants."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # its input holds the secret URL

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")  # how logs, tables and the API call it (never its URL)
    # the URL is a secret (a bot token, a webhook's key): exactly one of these; http(s):// is a plain JSON webhook,
    # any other scheme an apprise URL
    url: str | None = Field(default=None, repr=False)
    url_env: str | None = None  # the name of an environment variable holding it
    url_file: Path | None = None  # a file holding it (a container's secret)
    min_severity: Severity = "warning"
    types: list[AlertType] = Field(default_factory=list)  # empty: every type
    api_url: str | None = None  # another API base: a self-hosted Telegram Bot API server, a proxy

    def secret_url(self) -> str:
        """The URL, read now (ValueError naming the channel, never the URL, when it cannot be). Checked here, not
        by a validator: pydantic would quote the URL in its error."""
        if sum(v is not None for v in (self.url, self.url_env, self.url_file)) != 1:
            raise ValueError(f"alert channel {self.name!r}: give exactly one of url, url_env, url_file")
        if self.url is not None:
            return self.url
        if self.url_env is not None:
            if not (value := os.environ.get(self.url_env, "").strip()):
                raise ValueError(f"alert channel {self.name!r}: environment variable {self.url_env} is not set")
            return value
        assert self.url_file is not None
        try:
            return self.url_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"alert channel {self.name!r}: cannot read {self.url_file}: {exc.strerror}") from None


class AlertsSettings(BaseModel):
    """The alert relay: its channels, the users' price rules, storm aggregation and repeat limits."""

    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelSettings] = Field(default_factory=list)
    rules: list[PriceRule] = Field(default_factory=list)
    # a system alert when the recorder is this many messages behind the recorded topics (and one when back under)
    recorder_lag: int = Field(default=100_000, ge=1)
    # embedded: the run's own relay delivers to the channels; external: `papertape relay` does (the run only prints)
    relay: Literal["embedded", "external"] = "embedded"
    aggregate_s: float = Field(default=2.0, ge=0)  # alerts of one (type, title) this close go out as one message
    repeat_s: float = Field(default=60.0, ge=0)  # the same alert (type, source, title, session) again is held back
    # a channel down: retried until it takes the message (its offset waits: at least once), or with a limit, for
    # that long, then outcome "failed" (the message is then lost to that channel)
    retry_for_s: float | None = Field(default=None, gt=0)

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, v: list[ChannelSettings]) -> list[ChannelSettings]:
        names = [c.name for c in v]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"alert channels named more than once: {dupes}")
        return v

    @field_validator("rules")
    @classmethod
    def _unique_rule_ids(cls, v: list[PriceRule]) -> list[PriceRule]:  # an alert's id and its state are the rule's
        ids = [r.id for r in v]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"price rules with the same id: {dupes}")
        return v


class ApiSettings(BaseModel):
    """`papertape api`: where it listens and its bearer token (required beyond loopback)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = Field(default=None, repr=False)  # better: PAPERTAPE_API_TOKEN or token_file
    token_file: Path | None = None


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: str = "papertape"
    data_dir: Path = Path("papertape-data")
    kafka_bootstrap: str | None = None  # None: start the embedded broker
    broker: Literal["kafka", "tansu"] = "kafka"  # the embedded one (without Java, Tansu)
    # a prefix of every topic and consumer group: deployments sharing a cluster
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    clickhouse_url: str | None = None  # None: embedded ClickHouse (chdb) in data_dir
    md_partitions: int = Field(default=4, ge=1, le=256)
    session_partitions: int = Field(default=4, ge=1, le=256)
    instruments: list[Instrument] = Field(default_factory=lambda: list(DEFAULT_INSTRUMENTS.values()))
    sessions: list[SessionConfig] = Field(default_factory=lambda: [c.model_copy() for c in DEFAULT_SESSIONS])
    replay: list[Path] = Field(default_factory=lambda: list(BUNDLED_TAPE))
    speed: float = Field(default=0.0, ge=0)  # 0: as fast as possible; N: N x real time
    replay_seconds: float | None = None  # play only the first N seconds of event time
    checkpoint_every_s: float = Field(default=1.0, gt=0)
    take_within_ms: float = Field(default=20.0, gt=0, le=1000)  # an agent's longest batch wait (agents/take.py)
    workers: int = Field(default=1, ge=1, le=32)  # worker processes of `papertape run`; they share the partitions
    bybit: BybitSettings = Field(default_factory=BybitSettings)
    bybit_trading: BybitTradingSettings = Field(default_factory=BybitTradingSettings)
    coingecko: CoinGeckoSettings = Field(default_factory=CoinGeckoSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    webhook_url: str | None = None
    # every process's Prometheus /metrics: port 0 is a free port, written to data_dir/prometheus/<process>.json
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = Field(default=0, ge=0, le=65535)
    log_level: str = "warning"

    def with_env(self) -> "Settings":
        env = {k: v for k, v in {"kafka_bootstrap": os.environ.get("KAFKA_BOOTSTRAP"),
                                 "clickhouse_url": os.environ.get("CLICKHOUSE_URL"),
                                 "webhook_url": os.environ.get("PAPERTAPE_WEBHOOK_URL"),
                                 "namespace": os.environ.get("PAPERTAPE_NAMESPACE"),
                                 "broker": os.environ.get("PAPERTAPE_BROKER"),
                                 "data_dir": os.environ.get("PAPERTAPE_DATA"),
                                 "prometheus_host": os.environ.get("PAPERTAPE_PROMETHEUS_HOST"),
                                 "prometheus_port": os.environ.get("PAPERTAPE_PROMETHEUS_PORT")}.items() if v}
        out = Settings.model_validate(self.model_dump() | env) if env else self
        api = {k: v for k, v in {"token": os.environ.get("PAPERTAPE_API_TOKEN"),
                                 "token_file": os.environ.get("PAPERTAPE_API_TOKEN_FILE")}.items() if v}
        if api:
            out = out.model_copy(update={"api": ApiSettings.model_validate(out.api.model_dump() | api)})
        return out

    @property
    def names(self) -> Namespace:
        return Namespace(self.namespace)

    def instrument_map(self) -> dict[str, Instrument]:
        return {i.symbol: i for i in self.instruments}

    def session_partition(self, session_id: str) -> int:
        return kafka_partition(session_id.encode(), self.session_partitions)


def write_run_settings(settings: Settings, data_dir: Path) -> Path:
    """The run's settings where its workers and later commands read them, without its secrets (the API's token,
    the webhook's and channels' inline URLs, a ClickHouse URL's password: processes that need them take them from
    the environment, a file or their own --config), readable by the owner only."""
    channels = [c.model_copy(update={"url": None}) for c in settings.alerts.channels]
    public = settings.model_copy(update={"webhook_url": None,
                                         "clickhouse_url": without_password(settings.clickhouse_url),
                                         "api": settings.api.model_copy(update={"token": None}),
                                         "alerts": settings.alerts.model_copy(update={"channels": channels})})
    path = Path(data_dir) / RUN_SETTINGS
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(public.model_dump_json())
    return path


def without_password(url: str | None) -> str | None:
    """`url` with its password left out (`http://user@host:8123/db`)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def run_settings(data_dir: Path) -> Settings | None:
    """The settings of the run that wrote `data_dir` (None: none did, or a papertape that wrote another shape)."""
    try:
        return Settings.model_validate_json((Path(data_dir) / RUN_SETTINGS).read_text())
    except (OSError, ValueError):
        return None


def load_settings(path: Path | None = None, **overrides) -> Settings:
    data: dict = {}
    if path is not None:
        data = tomllib.loads(Path(path).read_text())
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**data).with_env()
