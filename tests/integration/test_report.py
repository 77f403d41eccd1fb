"""`papertape report` on a real archived run, opened in headless Chromium (Debian's `chromium` package): the file
is self-contained (no http(s) reference, and it renders with the network cut off), every chart of every session
is drawn by plotly.js (an SVG with its traces' paths, bars, markers and heatmap image), the decision log and the
metrics table show what `papertape sql` and `papertape metrics --json` give, and a screenshot shows the charts.

Chromium is driven as a subprocess: `--dump-dom` gives the DOM after plotly drew it (virtual time lets its
scripts finish), `--screenshot` a PNG of the page."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from browser import Node, chromium, dom, drawn
from builders import papertape, query_rows
from papertape.app.formatting import metric
from papertape.app.report import DECISIONS_SHOWN, EQUITY_COLOUR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WIDTH = 1400
# what a document that needs the network would load from: a script, style sheet, image or frame by URL
REMOTE_REFERENCE = re.compile(r"""<(?:script|link|img|iframe|source|embed|object)\b[^>]*?\b(?:src|href|data)\s*=\s*"""
                              r"""["']?\s*(?:https?:)?//|url\(\s*['"]?\s*(?:https?:)?//""", re.IGNORECASE)
ACCOUNT_CHARTS = ("equity", "underwater", "daily", "monthly")


# ---- the report, and what the archive says it should show -----------------------------------------------------------

@pytest.fixture(scope="module")
def report(archived_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    r = papertape("report", "--data-dir", str(archived_run.data_dir), "--out", str(out), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return SimpleNamespace(path=out, stdout=r.stdout, text=out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def archive_facts(archived_run):
    """The sessions, fills per symbol, decisions and metrics of the run, as the other commands give them."""
    rows = query_rows(archived_run.data_dir, {
        "sessions": "SELECT DISTINCT session FROM equity ORDER BY session",
        "fills": "SELECT session, symbol, side, count() FROM fills GROUP BY session, symbol, side",
        "decisions": "SELECT session, count() FROM decisions GROUP BY session",
        "latest": "SELECT session, argMax(reasoning, (ts, id)) FROM decisions GROUP BY session"})
    r = papertape("metrics", "--json", "--data-dir", str(archived_run.data_dir), timeout=120)
    assert r.returncode == 0, r.stderr
    fills: dict[str, dict[str, int]] = {}
    for session, symbol, _, n in rows["fills"]:
        fills.setdefault(session, {}).setdefault(symbol, 0)
        fills[session][symbol] += int(n)
    return SimpleNamespace(sessions=[s for (s,) in rows["sessions"]], fills=fills,
                           decisions={s: int(n) for s, n in rows["decisions"]}, latest=dict(rows["latest"]),
                           metrics=json.loads(r.stdout))


_rendered: dict[Path, Node] = {}


def rendered(report) -> Node:
    """The report's DOM once plotly drew it (rendered once for the module's tests)."""
    if report.path not in _rendered:
        _rendered[report.path] = dom(report.path, f"--window-size={WIDTH},1000")
    return _rendered[report.path]


def account_row(facts, session: str, period_ms: int) -> dict:
    return next(m for m in facts.metrics if m["session"] == session and m["symbol"] == "" and
                m["period_ms"] == period_ms)


def section(dom: Node, session: str) -> Node:
    found = dom.find_all("section", id=f"session-{session}")
    assert len(found) == 1, f"no section of session {session}"
    return found[0]


# ---- the tests ------------------------------------------------------------------------------------------------------

def test_report_is_one_self_contained_file(report, archive_facts):
    size = report.path.stat().st_size
    assert str(report.path) in report.stdout and f"{size:,} bytes" in report.stdout
    assert not REMOTE_REFERENCE.search(report.text), REMOTE_REFERENCE.search(report.text).group(0)[:200]
    # plotly.js inlined once, in the head; the figures only call it
    head = report.text[: report.text.index("<body")]
    assert head.count("<script") == 1 and re.search(r"plotly\.js v\d", head) and size > 3_000_000
    assert "Plotly.newPlot" not in head and report.text.count("Plotly.newPlot") >= 4 * len(archive_facts.sessions)
    for session in archive_facts.sessions:
        assert f'id="session-{session}"' in report.text and f'href="#session-{session}"' in report.text


def test_every_chart_of_every_session_is_drawn(report, archive_facts):
    dom = rendered(report)
    steps = {m["period_ms"] for m in archive_facts.metrics}
    for session in archive_facts.sessions:
        sec = section(dom, session)
        charts = {c.attrs["data-chart"]: c for c in sec.find_all("div", cls="chart")}
        closed = account_row(archive_facts, session, min(steps))["trades"]
        expected = {*ACCOUNT_CHARTS, *([] if not closed else ["trades"]),
                    *[f"fills-{sym}" for sym in archive_facts.fills.get(session, {})]}
        assert set(charts) == expected, session
        if not closed:  # a section without a chart still says why
            assert sec.find_all("p", cls="empty", data_chart_empty="trades")
        for name, chart in charts.items():
            seen = drawn(chart)
            assert seen["svg"] >= 1, f"{session} {name}: plotly drew nothing ({seen})"
            assert sum(v for k, v in seen.items() if k != "svg") > 0, f"{session} {name}: no trace drawn ({seen})"
        assert drawn(charts["equity"])["lines"] >= 1 and drawn(charts["underwater"])["lines"] >= 1
        assert drawn(charts["daily"])["bars"] == account_row(archive_facts, session, 86_400_000)["returns"]
        assert drawn(charts["monthly"])["heatmaps"] == 1
        if closed:
            assert drawn(charts["trades"])["bars"] >= 1
        for symbol, n in archive_facts.fills.get(session, {}).items():
            seen = drawn(charts[f"fills-{symbol}"])
            assert seen["markers"] == n, f"{session} {symbol}: {seen['markers']} fill markers, {n} fills"
            assert seen["lines"] == 1, f"{session} {symbol}: no price line"


def test_decision_log_and_metrics_show_the_archive(report, archive_facts):
    dom = rendered(report)
    step = min(m["period_ms"] for m in archive_facts.metrics)
    for session in archive_facts.sessions:
        sec = section(dom, session)
        decisions = sec.find_all("table", cls="decisions")
        assert len(decisions) == 1
        rows = decisions[0].find_all("tbody")[0].find_all("tr")
        assert len(rows) == min(DECISIONS_SHOWN, archive_facts.decisions[session])
        assert archive_facts.latest[session] in rows[0].text()  # newest first
        assert f"{archive_facts.decisions[session]} decisions" in sec.text()

        table = sec.find_all("table", cls="metrics")[0]
        header = [th.text() for th in table.find_all("th")]
        by_metric = {tr.find_all("td")[0].text(): [td.text() for td in tr.find_all("td")]
                     for tr in table.find_all("tbody")[0].find_all("tr")}
        expected = account_row(archive_facts, session, step)
        sharpe = by_metric["sharpe"][header.index("1m")]
        assert sharpe == metric("ratio", expected["sharpe"]) and sharpe, (session, sharpe, expected["sharpe"])
        assert by_metric["trades"][header.index("1m")] == str(expected["trades"])
        assert "sample standard deviation" in by_metric["sharpe"][-1]  # the definition beside it

        overview = {tr.find_all("td")[0].text(): [td.text() for td in tr.find_all("td")]
                    for tr in dom.find_all("table", cls="overview")[0].find_all("tbody")[0].find_all("tr")}
        assert overview[session][-1] == str(sum(archive_facts.fills.get(session, {}).values()))
        config = sec.find_all("pre")[0].text()
        assert json.loads(config)["balance"]  # the session's config, pretty-printed


def test_screenshot_shows_the_charts(report, tmp_path):
    png = tmp_path / "report.png"
    r = chromium(f"--window-size={WIDTH},3000", f"--screenshot={png}", report.path.as_uri())
    assert r.returncode == 0 and png.exists(), r.stderr[-2000:]
    image = Image.open(png).convert("RGB")
    assert image.size == (WIDTH, 3000)
    assert len(image.getcolors(maxcolors=1 << 24)) > 100, "the page is blank"
    # the first chart (the equity of the first session) is where the equity line's colour first appears
    line = tuple(int(EQUITY_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    pixels = image.load()
    rows = [y for y in range(image.height) if any(close(pixels[x, y], line) for x in range(0, WIDTH, 2))]
    assert rows, f"the equity line ({EQUITY_COLOUR}) is nowhere in the screenshot"
    top = rows[0]
    bottom = max(y for y in rows if y - top < 400)  # that chart's own line and legend
    assert bottom - top > 40, "the equity line is flat or missing"
    region = image.crop((0, top, WIDTH, bottom + 1))
    assert len(region.getcolors(maxcolors=1 << 24)) > 30, "the first chart's region has hardly any colours"


def close(pixel: tuple[int, int, int], colour: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def test_report_of_one_session(archived_run, tmp_path):
    out = tmp_path / "script.html"
    r = papertape("report", "--data-dir", str(archived_run.data_dir), "--session", "script", "--out", str(out),
                  timeout=120)
    assert r.returncode == 0, r.stderr
    text = out.read_text(encoding="utf-8")
    sessions = set(re.findall(r'<section id="session-([^"]+)"', text))
    assert sessions == {"script"}
    assert set(re.findall(r'data-session="([^"]+)"', text)) == {"script"}


def test_unknown_session_and_no_history_exit_1(archived_run, tmp_path):
    out = tmp_path / "none.html"
    r = papertape("report", "--data-dir", str(archived_run.data_dir), "--session", "nope", "--out", str(out))
    assert r.returncode == 1 and "no session" in r.stderr and "nope" in r.stderr and not out.exists()
    r = papertape("report", "--data-dir", str(tmp_path / "empty"), "--out", str(out))
    assert r.returncode == 1 and "no history" in r.stderr and not out.exists()

