"""`papertape audit` on a real run (a copy of the suite's archived run, as the test changes it): passes, and
catches a wrong deposit and a changed fee."""
import json
import shutil
import subprocess
import sys

import pytest

from builders import papertape, query_rows


@pytest.mark.slow  # four audits of a real run
@pytest.mark.timeout(240)
def test_audit_of_a_real_run_passes_and_catches_a_wrong_deposit_and_a_changed_fee(archived_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(archived_run.data_dir, data, symlinks=True)  # ClickHouse links its databases into store/
    script_fills = query_rows(data, {"n": "SELECT count() FROM fills WHERE session = 'script'"})["n"][0][0]

    r = papertape("audit", "--data-dir", str(data), "--json", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    checks = {(s["session"], c["check"]): c for s in rep["sessions"] for c in s["checks"]}
    assert rep["ok"] and "worker-settings.json" in rep["deposits_from"]
    assert {s["session"]: s["deposit"] for s in rep["sessions"]} == {"fast": "10000", "revert": "25000",
                                                                     "script": "20000"}
    assert checks["script", "fill realized"]["rows"] == script_fills >= 6  # long, add, partial close, flip, more
    assert checks["fast", "fill fee"]["rows"] >= 4, "the run must trade"
    assert all(c["rows"] >= 1 for (_, name), c in checks.items() if name.startswith("equity"))

    # the same run audited against a deposit 1 USDT off: the cash of its equity rows does not add up
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(archived_run.config.read_text().replace("balance = 20000", "balance = 20001"))
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
