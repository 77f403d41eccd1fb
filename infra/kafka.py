"""Embedded Apache Kafka (KRaft) cluster of local JVMs, for dev and tests.

The Kafka server jars come from Maven Central through ``infra/kafka/pom.xml``: the first
use runs ``mvn dependency:build-classpath`` once and caches the classpath under
``~/.cache/papertape`` (keyed by a hash of the pom); later uses need only ``java``.
Callers that can run another broker check :func:`java_available` first.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.broker import die_with_parent, free_ports

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
_PREEXEC = die_with_parent if sys.platform.startswith("linux") else None

# Written to data_dir; each JVM points kafka.logs.dir at its node dir.
_LOG4J2 = """\
status = warn
# Kafka logs through shutdown; the JVM's own hook would only race it (files flush per line)
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# the full config dump each JVM prints at startup
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaUnavailable(RuntimeError):
    """java or mvn is missing, or the Kafka jars could not be resolved."""


# --- toolchain ---------------------------------------------------------------------------

def _java_bin() -> str | None:
    if home := os.environ.get("JAVA_HOME"):
        if os.access(p := os.path.join(home, "bin", "java"), os.X_OK):
            return p
    return shutil.which("java")


@functools.lru_cache(maxsize=None)
def _java_version(java: str) -> str:
    try:
        return subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return ""


def _java_major(java: str) -> int | None:
    m = re.search(r'version "(\d+)(?:\.(\d+))?', _java_version(java))
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def kafka_version(pom: Path = POM) -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    return m.group(1).strip() if m else "unknown"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "papertape"


def _classpath_file(pom: Path) -> Path:
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    return _cache_dir() / f"kafka-{kafka_version(pom)}-{digest}.classpath"


def _cds_archive(java: str, classpath: str, version: str) -> Path:
    """Where the JVM's class-data-sharing archive of the Kafka classes goes. The JVM
    rejects an archive whose java or jars changed, so all of them are in the key."""
    h = hashlib.sha256(f"{os.path.realpath(java)}\n{_java_version(java)}".encode())
    for jar in classpath.split(os.pathsep):
        st = os.stat(jar)
        h.update(f"\n{jar} {st.st_size} {st.st_mtime_ns}".encode())
    return _cache_dir() / f"kafka-{version}-{h.hexdigest()[:16]}.jsa"


def _cached_classpath(pom: Path) -> str | None:
    """The cached classpath if it is there and every jar in it still exists."""
    try:
        cp = _classpath_file(pom).read_text().strip()
    except OSError:
        return None
    if cp and all(os.path.isfile(j) for j in cp.split(os.pathsep)):
        return cp
    return None


def unavailable_reason(pom: Path = POM) -> str | None:
    """Why an EmbeddedKafka cannot run here, or None if it can (as far as can be told
    without resolving the jars: a first resolution may still fail offline)."""
    java = _java_bin()
    if java is None:
        return f"java not found (Kafka {kafka_version(pom)} needs Java {MIN_JAVA}+ on PATH or in JAVA_HOME)"
    major = _java_major(java)
    if major is None or major < MIN_JAVA:
        return f"{java} is Java {major or '?'}; Kafka {kafka_version(pom)} needs Java {MIN_JAVA}+"
    if _cached_classpath(pom) is None and shutil.which("mvn") is None:
        return f"mvn not found and no cached Kafka classpath ({_classpath_file(pom)}); install Maven"
    return None


def kafka_jars_cached(pom: Path = POM) -> bool:
    """Whether the jars are resolved already (a first start runs Maven, which takes a while)."""
    return _cached_classpath(pom) is not None


def java_available(pom: Path = POM) -> bool:
    """True if java (17+) is here and the Kafka jars are cached or mvn can fetch them."""
    return unavailable_reason(pom) is None


def kafka_classpath(pom: Path = POM, *, timeout: float = 900.0) -> str:
    """The Kafka server classpath, resolved with Maven on first use and cached after."""
    if cp := _cached_classpath(pom):
        return cp
    if (why := unavailable_reason(pom)) is not None:
        raise KafkaUnavailable(why)
    out = _classpath_file(pom)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath", f"-Dmdep.outputFile={tmp}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise KafkaUnavailable(f"{' '.join(cmd)} took over {timeout}s") from None
    if r.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise KafkaUnavailable(
            f"resolving Kafka jars failed ({' '.join(cmd)}, exit {r.returncode}):\n"
            + "\n".join((r.stdout + r.stderr).splitlines()[-30:])
        )
    os.replace(tmp, out)  # atomic: concurrent first runs each write their own tmp
    return out.read_text().strip()


# --- probes ------------------------------------------------------------------------------

def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return bytes(buf)


def metadata_brokers(host: str, port: int, timeout: float = 1.0) -> set[int] | None:
    """Node ids of the live brokers a Kafka node lists in a raw Metadata v4 reply (no
    topics), or None if it does not answer. Kafka 4 dropped Metadata v0-v3."""
    client_id = b"papertape-probe"
    # header: api_key=3 (Metadata), api_version=4, correlation_id=1, client_id;
    # body: topics=[] (none), allow_auto_topic_creation=false
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(s, 4))
            resp = _recv_exact(s, size)
        corr, _throttle, n = struct.unpack_from(">iii", resp, 0)
        if corr != 1:
            return None
        off, ids = 12, set()
        for _ in range(n):  # node_id int32, host string, port int32, rack nullable string
            node_id, hlen = struct.unpack_from(">ih", resp, off)
            off += 6 + hlen
            _port, rlen = struct.unpack_from(">ih", resp, off)
            off += 6 + max(rlen, 0)
            ids.add(node_id)
        return ids
    except (OSError, struct.error):
        return None


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as the JVM sets it, so a port with TIME_WAIT leftovers counts as free
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _new_cluster_id() -> str:
    while True:  # as Kafka's Uuid.randomUuid: base64url, no padding, no leading '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# --- the cluster ---------------------------------------------------------------------------

@dataclass
class _Node:
    index: int
    dir: Path
    broker_port: int
    controller_port: int
    proc: subprocess.Popen | None = None

    @property
    def log_dir(self) -> Path:
        return self.dir / "data"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EmbeddedKafka:
    """An Apache Kafka cluster of ``nodes`` KRaft JVMs (each broker + controller) on
    loopback ports, storing under ``data_dir`` (a new temp dir, the caller's to delete,
    if None).

    The data dir keeps the cluster id, the ports and each node's log dir, so a cluster
    (or one node) restarted on it keeps its data and its addresses. With nodes=3 topics
    default to RF 3 with min.insync.replicas=2; with nodes=1 everything is RF 1.
    ``overrides`` adds or replaces server.properties entries on every node, and
    ``jvm_opts`` go after the default JVM flags (so they win).

    The JVMs run C1-only (-XX:TieredStopAtLevel=1): half the startup time, and less CPU
    than C2's compiling for a broker on a 2-core machine. The first clean stop leaves a
    class-data-sharing archive in the cache that later JVMs map, which saves another
    second or so per start.

    On Linux each JVM gets SIGKILL when its parent dies (PR_SET_PDEATHSIG). That fires
    when the *thread* that started it exits, so call start()/start_node() from a
    long-lived thread (the main one), not from a thread pool.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        nodes: int = 1,
        heap_mb: int = 512,
        start: bool = True,
        start_timeout: float = 60.0,
        stop_grace: float = 20.0,
        overrides: dict[str, object] | None = None,
        jvm_opts: list[str] | tuple[str, ...] = (),
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="kafka-")).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.n = nodes
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.overrides = dict(overrides or {})
        self.jvm_opts = list(jvm_opts)
        if (why := unavailable_reason()) is not None:
            raise KafkaUnavailable(why)
        self.classpath = kafka_classpath()
        java = _java_bin()
        if java is None:  # unavailable_reason() found it a moment ago
            raise KafkaUnavailable("java not found")
        self.java = java
        self.version = kafka_version()
        self._cds = _cds_archive(self.java, self.classpath, self.version)
        self._cds_dump: tuple[_Node, Path] | None = None  # the node writing the archive
        self.cluster_id, self.nodes = self._load_layout()
        if start:
            self.start()

    # layout ----------------------------------------------------------------------------

    @property
    def _layout_file(self) -> Path:
        return self.data_dir / "cluster.json"

    def _load_layout(self) -> tuple[str, list[_Node]]:
        try:
            saved = json.loads(self._layout_file.read_text())
        except FileNotFoundError:
            saved = None
        if saved is not None and len(saved["nodes"]) != self.n:
            raise ValueError(
                f"{self.data_dir} holds a {len(saved['nodes'])}-node cluster, not {self.n} nodes"
            )
        cluster_id = saved["cluster_id"] if saved else _new_cluster_id()
        ports = [(p["broker_port"], p["controller_port"]) for p in saved["nodes"]] if saved else []
        nodes = [
            _Node(i, self.data_dir / f"node-{i}", *(ports[i] if ports else (0, 0)))
            for i in range(self.n)
        ]
        self._assign_ports(nodes)
        self._save_layout(cluster_id, nodes)
        return cluster_id, nodes

    def _assign_ports(self, nodes: list[_Node]) -> None:
        """Keep each stored port that is still free; pick new free ones for the rest."""
        taken: set[int] = set()
        for node in nodes:
            for attr in ("broker_port", "controller_port"):
                p = getattr(node, attr)
                if p and p not in taken and (node.running or _port_free(p)):
                    taken.add(p)
                else:
                    setattr(node, attr, 0)
        missing = [(n, a) for n in nodes for a in ("broker_port", "controller_port") if not getattr(n, a)]
        for (node, attr), p in zip(missing, free_ports(len(missing), taken)):
            setattr(node, attr, p)

    def _save_layout(self, cluster_id: str, nodes: list[_Node]) -> None:
        data = {
            "cluster_id": cluster_id,
            "kafka_version": kafka_version(),
            "nodes": [{"broker_port": n.broker_port, "controller_port": n.controller_port} for n in nodes],
        }
        tmp = self._layout_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self._layout_file)

    # config ----------------------------------------------------------------------------

    def _properties(self, node: _Node) -> dict[str, object]:
        rf = min(self.n, 3)
        min_isr = 2 if rf >= 3 else 1
        voters = ",".join(f"{n.index}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": node.index,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": node.log_dir,
            "auto.create.topics.enable": "true",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Internal topics default to 50 partitions each: slow to create on the first
            # consumer group or transaction, and pointless on a local cluster.
            "offsets.topic.num.partitions": self.n,
            "transaction.state.log.num.partitions": self.n,
            "share.coordinator.state.topic.num.partitions": self.n,
            "group.initial.rebalance.delay.ms": 0,
            # papertape's producers send up to 8 MiB (Faust's producer_max_request_size): a message the agents
            # refuse as oversized must reach them to be dead-lettered
            "message.max.bytes": 8 << 20,
            "replica.fetch.max.bytes": 8 << 20,
            # light on a 2-core machine that may run three of these
            "num.network.threads": 2,
            "num.io.threads": 2,
            "background.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.threads": 1,
            # 128 MiB by default, allocated on the heap at startup
            "log.cleaner.dedupe.buffer.size": 16 << 20,
            # A SIGKILLed node is fenced (and leaves the ISRs, unblocking acks=all
            # producers) after the session timeout, and a node restarted after a
            # SIGKILL cannot register before its old session expires: 4 s here, not 9.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 4000,
        }
        props.update(self.overrides)
        return props

    def _write_config(self, node: _Node) -> Path:
        node.dir.mkdir(parents=True, exist_ok=True)
        path = node.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
        return path

    def _jvm(self, heap_mb: int, node: _Node, *, dump_cds: bool = False) -> list[str]:
        cmd = [
            self.java,
            f"-Xmx{heap_mb}m", f"-Xms{min(64, heap_mb)}m",
            # Serial GC: fewest threads and least memory for a small heap on 2 cores
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.dir}",
        ]
        if self._cds.is_file():
            cmd.append(f"-XX:SharedArchiveFile={self._cds}")
        elif dump_cds and self._cds_dump is None:
            # written when this JVM exits; promoted to self._cds only after a clean exit
            tmp = self._cds.with_name(f"{self._cds.stem}.{os.getpid()}.{node.index}.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            self._cds_dump = (node, tmp)
            cmd.append(f"-XX:ArchiveClassesAtExit={tmp}")
        return cmd + self.jvm_opts + ["-cp", self.classpath]

    def _settle_cds(self, node: _Node, returncode: int | None) -> None:
        if self._cds_dump is None or self._cds_dump[0] is not node:
            return
        _, tmp = self._cds_dump
        self._cds_dump = None
        if returncode is not None and returncode >= 0 and tmp.is_file() and tmp.stat().st_size:
            os.replace(tmp, self._cds)
        else:
            tmp.unlink(missing_ok=True)

    def _format(self, nodes: list[_Node]) -> None:
        """Format the log dir of each node that has none yet (several in parallel)."""
        todo = [n for n in nodes if not (n.log_dir / "meta.properties").is_file()]
        procs = []
        for node in todo:
            cmd = self._jvm(128, node) + [
                "kafka.tools.StorageTool", "format",
                "-t", self.cluster_id, "-c", str(node.dir / "server.properties"),
                "--ignore-formatted",
            ]
            procs.append((node, subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, preexec_fn=_PREEXEC,
            )))
        failed = []
        for node, proc in procs:
            try:
                out, _ = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out = proc.communicate()[0] + "\n<timed out after 120s>"
            if proc.returncode != 0:
                failed.append(f"formatting {node.log_dir} failed (exit {proc.returncode}):\n{out}")
        if failed:
            raise RuntimeError("\n".join(failed))

    # lifecycle -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.broker_port}" for n in self.nodes)

    @property
    def running(self) -> bool:
        """All nodes are up (see node_running for one)."""
        return all(n.running for n in self.nodes)

    def node_running(self, i: int) -> bool:
        return self.nodes[i].running

    @property
    def pids(self) -> list[int]:
        """Process ids of the running nodes' JVMs."""
        return [n.proc.pid for n in self.nodes if n.proc is not None and n.running]

    def log_tail(self, n: int = 40, node: int | None = None) -> str:
        parts = []
        for nd in self.nodes if node is None else [self.nodes[node]]:
            for name in ("stdout.log", "server.log"):
                try:
                    lines = (nd.dir / name).read_text(errors="replace").splitlines()[-n:]
                except OSError:
                    continue
                if lines:
                    parts.append(f"--- node {nd.index} {name}:\n" + "\n".join(lines))
        return "\n".join(parts) or "<no log>"

    def _spawn(self, node: _Node) -> None:
        cmd = self._jvm(self.heap_mb, node, dump_cds=True) + [
            "kafka.Kafka", str(node.dir / "server.properties"),
        ]
        with open(node.dir / "stdout.log", "ab") as log:
            node.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_PREEXEC,
            )

    def start(self) -> "EmbeddedKafka":
        """Start every node that is not running; return once each lists all brokers."""
        down = [n for n in self.nodes if not n.running]
        if not down:
            return self
        if len(down) == self.n:  # a whole-cluster start may move ports that got taken
            self._assign_ports(self.nodes)
            self._save_layout(self.cluster_id, self.nodes)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        for node in self.nodes:
            self._write_config(node)
        self._format(down)
        for node in down:
            self._spawn(node)
        try:
            self._wait_ready(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, i: int, timeout: float | None = None) -> None:
        """Restart node i on its dir and ports; return once every running node lists it."""
        node = self.nodes[i]
        if node.running:
            return
        for port in (node.broker_port, node.controller_port):
            if not _port_free(port):
                raise RuntimeError(f"node {i}: port {port} is taken; cannot restart it on its address")
        self._write_config(node)
        self._format([node])
        self._spawn(node)
        try:
            self._wait_ready(self.start_timeout if timeout is None else timeout)
        except BaseException:
            self.kill(i)
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            up = [(n, n.proc) for n in self.nodes if n.proc is not None]
            for n, proc in up:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"kafka node {n.index} exited with code {proc.returncode} during startup "
                        f"({n.dir}):\n{self.log_tail(node=n.index)}"
                    )
            want = {n.index for n, _ in up}
            if all(metadata_brokers("127.0.0.1", n.broker_port) == want for n, _ in up):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"kafka nodes {sorted(want)} did not all list each other within {timeout}s "
                    f"({self.data_dir}):\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        """SIGKILL node i (no clean shutdown)."""
        node = self.nodes[i]
        proc, node.proc = node.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._settle_cds(node, None)

    def stop(self) -> None:
        """SIGTERM every node (a clean shutdown), SIGKILL any still up after stop_grace."""
        procs = [(n, n.proc) for n in self.nodes if n.proc is not None]
        for n, _ in procs:
            n.proc = None
        live = [p for _, p in procs if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for n, p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            self._settle_cds(n, p.returncode if p in live else None)

    def __enter__(self) -> "EmbeddedKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # `make install`: resolve the jars now rather than at the first run
    why = unavailable_reason()
    if why is None:
        kafka_classpath()
        print(f"Apache Kafka {kafka_version()}: jars resolved")
    else:
        print(f"Apache Kafka cannot run here ({why}): papertape will use the embedded Tansu")
