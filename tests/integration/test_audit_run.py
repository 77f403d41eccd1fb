"""`papertape audit` on a real run: passes, and catches a wrong deposit and a changed fee."""
import json
import subprocess
import sys

import pytest

from builders import papertape

CONFIG = """
md_partitions = 2
session_partitions = 2
replay_seconds = 32

[[sessions]]
id = "fast"
params = { fast = 2, slow = 5, bar_ms = 2000, full_confidence_bps = 0.5 }

[[sessions]]
id = "script"
strategy = "scripted"
balance = 20000
params = { orders = [
  { at = 1723161260000, symbol = "BTCUSDT", side = "buy", qty = "0.003" },
  { at = 1723161265000, symbol = "BTCUSDT", side = "buy", qty = "0.002" },
  { at = 1723161270000, symbol = "BTCUSDT", side = "sell", qty = "0.001" },
  { at = 1723161275000, symbol = "BTCUSDT", side = "sell", qty = "0.007" },
  { at = 1723161280000, symbol = "ETHUSDT", side = "sell", qty = "0.2", type = "limit", price = "2660.00" },
  { at = 1723161285000, symbol = "BTCUSDT", side = "buy", qty = "0.003", reduce_only = true },
] }
"""


@pytest.mark.slow  # ~30 s: a 32 s replay through the real broker, worker and chdb, then four audits
@pytest.mark.timeout(240)
def test_audit_of_a_real_run_passes_and_catches_a_wrong_deposit_and_a_changed_fee(tmp_path):
    cfg = tmp_path / "papertape.toml"
    cfg.write_text(CONFIG)
    data = tmp_path / "data"
    r = papertape("run", "--config", str(cfg), "--data-dir", str(data), timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr

    r = papertape("audit", "--data-dir", str(data), "--json", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    checks = {(s["session"], c["check"]): c for s in rep["sessions"] for c in s["checks"]}
    assert rep["ok"] and "worker-settings.json" in rep["deposits_from"]
    assert {s["session"]: s["deposit"] for s in rep["sessions"]} == {"fast": "10000", "script": "20000"}
    assert checks["script", "fill realized"]["rows"] == 6  # long, add, partial close, flip, two more
    assert checks["fast", "fill fee"]["rows"] >= 4, "the run must trade"
    assert all(c["rows"] >= 1 for (_, name), c in checks.items() if name.startswith("equity"))

    # the same run audited against a deposit 1 USDT off: the cash of its equity rows does not add up
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(CONFIG.replace("balance = 20000", "balance = 20001"))
    r = papertape("audit", "--data-dir", str(data), "--config", str(wrong), timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "script / equity cash" in r.stdout and "diff=1" in r.stdout and "audit FAILED" in r.stdout
    assert papertape("audit", "--data-dir", str(data), "--config", str(wrong), "--session", "fast",
                     timeout=60).returncode == 0

    # a fee changed in the archive (a newer row with the same key replaces it in the FINAL view)
    sql = ("INSERT INTO fills_log SELECT * REPLACE (fee + toDecimal128('0.00000001', 18) AS fee) FROM fills "
           "WHERE id = 'script-4:f4'")
    change = ("import sys; from pathlib import Path; from infra.clickhouse import connect; "
              "c = connect(None, Path(sys.argv[1])); c.command(sys.argv[2]); c.close()")
    r = subprocess.run([sys.executable, "-c", change, str(data), sql], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = papertape("audit", "--data-dir", str(data), "--session", "script", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "script / fill fee: 1 mismatching rows" in r.stdout and "id=script-4:f4" in r.stdout
    assert "diff=0.00000001" in r.stdout and "script / equity cash" not in r.stdout
