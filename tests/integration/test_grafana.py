"""Grafana as code (infra/grafana): the provisioned data sources and dashboards are valid, and every panel's SQL
runs in ClickHouse on a real archive (the session-wide `archived_run`), its macros and template variables expanded
as Grafana and the ClickHouse plugin (grafana-clickhouse-datasource) expand them."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from builders import ROOT
from infra import prometheus
from infra.clickhouse import connect

yaml = pytest.importorskip("yaml", reason="PyYAML parses the provisioning files: add pyyaml to the test extras")

GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
CLICKHOUSE = "grafana-clickhouse-datasource"
SESSIONS = ["fast", "revert", "script"]  # archived_run's sessions (tests/integration/conftest.py)
# panels of a run that traded: each must show rows for every session selection the test makes
MUST_HAVE_ROWS = {"Sessions", "Equity", "Drawdown", "P&L and fees", "Fills", "Fees paid",
                  "Fills and fees by session and symbol", "Recent fills", "Decisions by action",
                  "Decisions per session", "Order events by status", "Decision to first fill (event time)",
                  "Delays per session (event time)", "Archive freshness"}


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every provisioned data source."""
    out = {}
    for f in (GRAFANA / "provisioning" / "datasources").glob("*.yml"):
        for ds in yaml.safe_load(f.read_text())["datasources"]:
            out[ds["uid"]] = ds["type"]
    return out


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    return [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])] if p.get("type") != "row"]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_is_valid_and_its_data_sources_are_provisioned(path):
    d = load(path)
    sources = provisioned_datasources()
    assert d["uid"] and len(d["uid"]) <= 40 and d["title"], "Grafana needs a uid (at most 40 characters) and a title"
    assert [v["name"] for v in d["templating"]["list"]] == ["session"]
    ids = [p["id"] for p in panels(d)]
    assert panels(d) and len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for p in panels(d):
        assert p["title"] and p["targets"], p.get("title")
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys() and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        for ref in [p["datasource"], *(t["datasource"] for t in p["targets"])]:
            assert sources.get(ref["uid"]) == ref["type"], f"{p['title']}: {ref} is not a provisioned data source"
        for t in p["targets"]:
            assert t["refId"]
            if t["datasource"]["type"] == CLICKHOUSE:
                assert t["editorType"] == "sql" and t["rawSql"].strip(), p["title"]
            else:
                assert t["expr"].strip(), p["title"]
    for v in d["templating"]["list"]:
        assert sources.get(v["datasource"]["uid"]) == v["datasource"]["type"], v["name"]


def test_the_dashboards_are_provisioned_from_the_directory_compose_mounts():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(m.split(":")[:2] for m in compose["volumes"])
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "papertape.yml").read_text())["providers"]
    (path,) = [p["options"]["path"] for p in provider]
    assert mounts["./infra/grafana/dashboards"] == path
    assert mounts["./infra/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert len({load(p)["uid"] for p in DASHBOARDS}) == len(DASHBOARDS), "dashboard uids repeat"


# -- the SQL, as ClickHouse receives it


@dataclass(frozen=True)
class TimeRange:
    from_ms: int
    to_ms: int
    interval_ms: int  # Grafana's $__interval: the range over the panel's width in points


def ch_macro(name: str, args: list[str], r: TimeRange) -> str:
    """The plugin's expansion of `$__name(args)` (pkg/macros/macros.go of grafana/clickhouse-datasource 4.x, and its
    README's "Macros"): seconds precision for the plain names, DateTime64(3) for the `_ms` ones."""
    dt = {"from": f"toDateTime({r.from_ms // 1000})", "to": f"toDateTime({r.to_ms // 1000})"}
    dt64 = {"from": f"fromUnixTimestamp64Milli({r.from_ms})", "to": f"fromUnixTimestamp64Milli({r.to_ms})"}
    seconds = max(r.interval_ms // 1000, 1)
    match name, args:
        case "fromTime", []:
            return dt["from"]
        case "toTime", []:
            return dt["to"]
        case "fromTime_ms", []:
            return dt64["from"]
        case "toTime_ms", []:
            return dt64["to"]
        case "timeFilter", [col]:
            return f"{col} >= {dt['from']} AND {col} <= {dt['to']}"
        case "timeFilter_ms", [col]:
            return f"{col} >= {dt64['from']} AND {col} <= {dt64['to']}"
        case "timeInterval", [col]:
            return f"toStartOfInterval(toDateTime({col}), INTERVAL {seconds} second)"
        case "timeInterval_ms", [col]:
            return f"toStartOfInterval(toDateTime64({col}, 3), INTERVAL {max(r.interval_ms, 1)} millisecond)"
        case "interval_s", []:
            return str(seconds)
    raise AssertionError(f"$__{name}({', '.join(args)}): not a macro of the ClickHouse plugin (or its arguments)")


MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")


def expand(sql: str, r: TimeRange, variables: dict[str, list[str]]) -> str:
    """Grafana first replaces template variables (`${v:singlequote}`: each value quoted, joined by commas; plain
    `$v`/`${v}`: the plugin's own format, several values quoted and joined, one as it is), then the plugin expands
    its macros on the server."""
    def variable(m: re.Match) -> str:
        name, fmt = (m[1], m[2]) if m[1] else (m[3], None)
        assert name in variables, f"${name}: no such template variable"
        values = variables[name]
        quoted = ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        if fmt == "singlequote":
            return quoted
        assert fmt is None, f"${{{name}:{fmt}}}: a format the test does not expand"
        return quoted if len(values) > 1 else values[0]

    sql = VARIABLE.sub(variable, sql)
    sql = MACRO.sub(lambda m: ch_macro(m[1], [a.strip() for a in m[2].split(",")] if m[2] else [], r), sql)
    assert "$" not in sql, f"left unexpanded: {sql}"
    return sql


def test_the_expansion_follows_the_plugin():
    """The expansion itself, against the examples of the plugin's documentation."""
    r = TimeRange(from_ms=1_723_161_600_123, to_ms=1_723_165_200_456, interval_ms=20_000)
    assert expand("WHERE $__timeFilter(ts)", r, {}) == \
        "WHERE ts >= toDateTime(1723161600) AND ts <= toDateTime(1723165200)"
    assert expand("$__timeFilter_ms(ts)", r, {}) == ("ts >= fromUnixTimestamp64Milli(1723161600123) AND "
                                                      "ts <= fromUnixTimestamp64Milli(1723165200456)")
    assert expand("$__timeInterval(ts) $__interval_s", r, {}) == \
        "toStartOfInterval(toDateTime(ts), INTERVAL 20 second) 20"
    assert expand("s IN (${s:singlequote}) AND t = $t", r, {"s": ["a", "b'c"], "t": ["x"]}) == \
        "s IN ('a','b\\'c') AND t = x"
    with pytest.raises(AssertionError):
        expand("$__timeFilter(a, b)", r, {})


@pytest.fixture(scope="module")
def archive(archived_run):
    """The archive of the run, in this process's embedded ClickHouse (released at the end: other tests read it)."""
    client = connect(None, archived_run.data_dir)
    yield client
    client.close()


@pytest.fixture(scope="module")
def time_range(archive) -> TimeRange:
    """The range a user picks to see the whole replay: the tape's first to its last quote, whole seconds around
    them; about 100 points across it."""
    lo, hi = archive.query("SELECT toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts)) "
                           "FROM md_quotes_log").result_rows[0]
    lo, hi = lo // 1000 * 1000, (hi // 1000 + 1) * 1000
    return TimeRange(lo, hi, max((hi - lo) // 100, 1))


def test_the_session_variable_lists_the_runs_sessions(archive, time_range):
    for path in DASHBOARDS:
        (var,) = load(path)["templating"]["list"]
        rows = archive.query(expand(var["query"], time_range, {})).result_rows
        assert [row[0] for row in rows] == SESSIONS, path.name


def clickhouse_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, rawSql) of every ClickHouse query."""
    return [(path.name, p["title"], t["rawSql"]) for path in DASHBOARDS for p in panels(load(path))
            for t in p["targets"] if t["datasource"]["type"] == CLICKHOUSE]


@pytest.mark.parametrize("dashboard,title,sql", [pytest.param(*t, id=f"{t[0]}:{t[1]}") for t in clickhouse_targets()])
def test_every_panels_sql_runs_on_a_real_archive(archive, time_range, dashboard, title, sql):
    for selected in (SESSIONS, SESSIONS[-1:]):  # "All", and one session
        result = archive.query(expand(sql, time_range, {"session": selected}))
        if title in MUST_HAVE_ROWS:
            assert result.result_rows, f"{dashboard}: {title} shows nothing for {selected}"
        if "session" in result.column_names:  # None: an alert of no session (a system alert)
            shown = {row[result.column_names.index("session")] for row in result.result_rows} - {None}
            assert shown <= set(selected), f"{title}: the session variable does not filter ({shown})"


def test_the_core_panels_agree_with_the_archive(archive, time_range):
    """The fills table adds up to the archive's fills, the equity chart ends at each session's last snapshot."""
    by = {title: sql for _, title, sql in clickhouse_targets()}
    variables = {"session": SESSIONS}

    fills = archive.query(expand(by["Fills and fees by session and symbol"], time_range, variables))
    col = fills.column_names.index
    expected = dict(((s, sym), (n, fee)) for s, sym, n, fee in archive.query(
        "SELECT session, symbol, count(), toFloat64(sum(fee)) FROM (SELECT DISTINCT * FROM fills_log) "
        "GROUP BY session, symbol").result_rows)
    got = {(r[col("session")], r[col("symbol")]): (r[col("fills")], r[col("fees")]) for r in fills.result_rows}
    assert got.keys() == expected.keys()
    for key, (n, fee) in expected.items():
        assert got[key][0] == n and got[key][1] == pytest.approx(fee, rel=1e-9, abs=1e-12), key

    equity = archive.query(expand(by["Equity"], time_range, variables))
    last = {}
    for t, session, value in equity.result_rows:
        last[session] = max(last.get(session, (t, value)), (t, value))
    expected_last = dict(archive.query(
        "SELECT session, toFloat64(argMax(equity, ts)) FROM equity_log GROUP BY session").result_rows)
    assert {s: v for s, (_, v) in last.items()} == pytest.approx(expected_last)


def prometheus_series_names() -> set[str]:
    """The series every papertape metric family exposes (a counter's `_total`, a histogram's `_bucket`...)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",)}
    families = [*REGISTRY.collect(), *prometheus.FAUST.describe(), *prometheus.RECORDER_LAG.describe()]
    return {f.name + s for f in families if f.name.startswith("papertape_") for s in suffixes.get(f.type, ("",))}


def test_the_prometheus_panels_query_metrics_papertape_exports():
    exported = prometheus_series_names()
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for t in p["targets"]:
                if t["datasource"]["type"] == "prometheus":
                    used = set(re.findall(r"\bpapertape_\w+", t["expr"]))
                    assert used and used <= exported, f"{p['title']}: {sorted(used - exported)} are not exported"


def test_the_prometheus_scrape_config_names_the_compose_services():
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounted = [m.split(":")[0] for m in services["prometheus"]["volumes"]]
    assert "./infra/grafana/prometheus.yml" in mounted
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, f"{job['job_name']} scrapes {name}, not a compose service"
                env = services[name].get("environment") or {}
                port = 8000 if name == "api" else int(env.get("PAPERTAPE_PROMETHEUS_PORT", 0))
                assert sd["port"] == port, f"{name} serves /metrics on {port}"
    scraped = {n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    papertape = {name for name, svc in services.items() if "papertape" in (svc.get("command") or [])[:1]}
    assert papertape <= scraped, f"not scraped: {papertape - scraped}"
    (api,) = [job for job in config["scrape_configs"] if job["job_name"] == "api"]
    token = Path(api["authorization"]["credentials_file"])  # the api's /metrics wants its bearer token
    secrets = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["secrets"]
    assert token.parent == Path("/run/secrets") and token.name in services["prometheus"]["secrets"]
    assert secrets[token.name] == {"environment": "PAPERTAPE_API_TOKEN"}
