"""The run's settings file, which workers, the gateway and later commands read, holds no secret."""
from __future__ import annotations

import stat

from papertape.config import Settings, run_settings, write_run_settings


def test_the_run_settings_file_keeps_no_secret_and_is_the_owners_alone(tmp_path):
    settings = Settings(clickhouse_url="http://papertape:ch-pass-83f1@clickhouse:8123/papertape",
                        webhook_url="https://hooks.example/T0/B0/hook-secret-77",
                        api={"token": "api-token-5d2a"})
    path = write_run_settings(settings, tmp_path)
    text = path.read_text()
    for secret in ("ch-pass-83f1", "hook-secret-77", "api-token-5d2a"):
        assert secret not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_settings(tmp_path).clickhouse_url == "http://papertape@clickhouse:8123/papertape"  # still says where
