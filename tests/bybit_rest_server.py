"""A local stand-in for Bybit's v5 REST market endpoints (recorded instruments and tickers of nautilus_trader's
fixtures), with CoinGecko's `simple/price` (WETH) and an empty DefiLlama beside it, for the live tests."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from builders import DATA

HTTP = DATA / "bybit" / "http" / "nautilus_py" / "linear"


WETH_PRICE = "3012.4512"  # CoinGecko's answer in the live test, in its documented shape


class BybitRest:
    """Bybit's v5 REST market endpoints, answering nautilus_trader's recorded instruments and tickers; and
    CoinGecko's simple/price (WETH only) and an empty DefiLlama, for the live test's tokens."""

    def __init__(self) -> None:
        answers = {"/v5/market/instruments-info": lambda: (HTTP / "instruments.json").read_bytes(),
                   "/v5/market/tickers": lambda: (HTTP / "tickers.json").read_bytes(),
                   "/api/v3/simple/price": lambda: b'{"weth": {"usd": %s, "last_updated_at": %d}}' % (
                       WETH_PRICE.encode(), int(time.time()) - 5),
                   "/llama/prices/current": lambda: b'{"coins": {}}'}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                answer = answers.get(path) or answers.get(path.rsplit("/", 1)[0])
                body = answer() if answer else None
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
