"""Pages in a real browser, for the tests: Debian's headless Chromium as a subprocess (`--dump-dom` gives the DOM
after the page's scripts ran, `--screenshot` a PNG), and the dumped DOM as a tree with what plotly drew in a chart."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: CI installs it (Makefile)
def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless Chromium with the network cut off (a proxy nobody listens on): the report must not need it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the report test opens the report in headless Chromium; install Debian's "
                    "package: apt-get install chromium")
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--proxy-server=http://127.0.0.1:9", "--virtual-time-budget=15000", *args],
                          capture_output=True, text=True, timeout=timeout)


# ---- the rendered DOM, as a tree ------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.attrs.get("class", "").split())
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def text(self) -> str:
        return "".join(t for n in self.walk() for t in n.text_parts)


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.stack[-1].tag not in ("script", "style"):
            self.stack[-1].text_parts.append(data)


def parse(html_text: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html_text)
    builder.close()
    return builder.root


def drawn(chart: Node) -> dict[str, int]:
    """What plotly drew in a chart: its SVGs and, in the plot area (not the legend), line paths with a path,
    markers, bars and heatmap images."""
    plot = Node("plot area", {}, [g for svg in chart.find_all("svg", cls="main-svg")
                                  for g in svg.find_all("g", cls="cartesianlayer")])
    return {
        "svg": len(chart.find_all("svg", cls="main-svg")),
        "lines": sum(1 for p in plot.find_all("path", cls="js-line") if len(p.attrs.get("d", "")) > 4),
        "markers": sum(1 for p in plot.find_all("path", cls="point") if p.attrs.get("d")),
        "bars": sum(1 for g in plot.find_all("g", cls="point") for p in g.find_all("path") if p.attrs.get("d")
                    and "M" in p.attrs["d"]),
        "heatmaps": sum(1 for g in plot.find_all("g", cls="hm") for i in g.find_all("image")
                        if (i.attrs.get("xlink:href") or i.attrs.get("href", "")).startswith("data:image/png")),
    }


def dom(page: Path, *args: str) -> Node:
    """The page's DOM once its scripts ran."""
    r = chromium(*args, "--dump-dom", page.as_uri())
    assert r.returncode == 0 and "</html>" in r.stdout, r.stderr[-2000:]
    return parse(r.stdout)
