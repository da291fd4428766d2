"""The local Kafka broker(s): Apache Kafka 4.4 in KRaft mode, loopback only. One node (broker + controller) by
default; `FLEET_KAFKA_BROKERS=3` (`fleet up --kafka-brokers 3`) starts three such nodes that form one cluster (a
controller quorum of three, every fleet topic on three brokers, min.insync.replicas 2: producers' acks=all then
survive the loss of any one broker with nothing lost). The nodes share one cluster id, kept in the stack's home.

The broker runs from the official jars on Maven Central, pinned with sha256 in `kafka-jars.txt`
(regenerate with `scripts/lock_kafka_jars.sh`). They are fetched once over HTTPS into the user's
cache dir (no Maven needed) and checked on every start. Storage is formatted on first start.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fleet.settings import Settings
from fleet.stack.errors import StackError
from fleet.stack.process import ManagedProcess, port_in_use

KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17


@dataclass(frozen=True)
class Jar:
    """One pinned artifact of the broker's classpath."""

    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repo: str) -> str:
        return f"{repo.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"


def pinned_jars() -> list[Jar]:
    text = importlib.resources.files("fleet.stack").joinpath("kafka-jars.txt").read_text()
    jars = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            coords, sha = line.split()
            group, artifact, version = coords.split(":")
            jars.append(Jar(group, artifact, version, sha))
    return jars


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, sha256: str, *, attempts: int = 3) -> None:
    tmp = dest.with_suffix(".part")
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            actual = _sha256(tmp)
            if actual != sha256:
                raise StackError(f"checksum mismatch for {url}: expected {sha256}, got {actual}")
            tmp.rename(dest)
            return
        except (urllib.error.URLError, OSError, StackError) as err:
            last = err
            tmp.unlink(missing_ok=True)
            time.sleep(1.0 * (attempt + 1))
    raise StackError(
        f"could not download {url} ({last}). Check the network, or point FLEET_MAVEN_REPO at a Maven mirror."
    )


def ensure_jars(settings: Settings, *, progress: bool = False) -> Path:
    """Return the directory holding every pinned jar, fetching and verifying what is missing."""
    jars = pinned_jars()
    libs = settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    libs.mkdir(parents=True, exist_ok=True)
    manifest = hashlib.sha256("\n".join(f"{j.filename} {j.sha256}" for j in jars).encode()).hexdigest()
    marker = libs / ".verified"
    if marker.exists() and marker.read_text() == manifest and all((libs / j.filename).exists() for j in jars):
        return libs
    missing = [j for j in jars if not (libs / j.filename).exists() or _sha256(libs / j.filename) != j.sha256]
    if missing:
        iterator: Iterable[Jar] = missing
        if progress:
            from rich.progress import track

            iterator = track(missing, description=f"fetching Kafka {KAFKA_VERSION} jars")
        for jar in iterator:
            _download(jar.url(settings.maven_repo), libs / jar.filename, jar.sha256)
    marker.write_text(manifest)
    return libs


def check_java() -> str:
    """Path of a `java` >= 17, or a StackError saying how to get one."""
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"Java not found: Kafka needs Java {MIN_JAVA}+ (Debian: apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(f"Java {major} found at {java}, Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+")
    return java


def _server_properties(settings: Settings, data_dir: Path, node: int = 0) -> str:
    host, n = settings.host, settings.kafka_brokers
    port, cport = settings.kafka_node_ports(node)
    voters = ",".join(f"{i + 1}@{host}:{settings.kafka_node_ports(i)[1]}" for i in range(n))
    replicas, min_isr = min(3, n), 2 if n >= 3 else 1  # fleet topics take the default (TransportConfig)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node + 1}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={settings.kafka_partitions}",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=8",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            # A killed broker is fenced after 4 s without heartbeats instead of 9: its partitions' producers and
            # consumers wait half as long for new leaders (4 missed heartbeats: a busy host's hiccup fences nothing).
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=4000",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "num.network.threads=2",
            "num.io.threads=2",
            # Followers fetch 32 KB or 20 ms at a time rather than each new record as it comes (the default 1 B):
            # with a thousand robots' segments a second, a fetch per record was the brokers' main work. An acks=all
            # send waits for followers' fetches one after another, so the wait multiplies: at 100 ms a hundred
            # robots' sends took 0.5 s to be acknowledged, at 20 ms as long as with the defaults (~60 ms).
            "replica.fetch.min.bytes=32768",
            "replica.fetch.wait.max.ms=20",
            "log.retention.hours=168",
            "message.max.bytes=10485760",
            "",
        ]
    )


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


class KafkaService:
    """Start, stop and probe one local KRaft node (`node` of `settings.kafka_brokers`, from 0)."""

    def __init__(self, settings: Settings, node: int = 0) -> None:
        if not 0 <= node < settings.kafka_brokers:
            raise ValueError(f"broker {node} of {settings.kafka_brokers}: no such node")
        self.settings = settings
        self.node = node
        # One broker keeps the single-node layout (kafka/); a cluster's nodes are kafka-1/, kafka-2/, ...: another
        # cluster, not the single broker's data with new peers.
        self.name = "kafka" if settings.kafka_brokers == 1 else f"kafka-{node + 1}"
        self.dir = settings.home / self.name
        self.data_dir = self.dir / "data"

    @classmethod
    def cluster(cls, settings: Settings) -> list[KafkaService]:
        """Every local node `settings` asks for."""
        return [cls(settings, node) for node in range(settings.kafka_brokers)]

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_node_ports(self.node)[0]}"

    @property
    def ports(self) -> list[int]:
        return list(self.settings.kafka_node_ports(self.node))

    def process(self, java: str = "java", libs: Path | None = None) -> ManagedProcess:
        libs = libs or self.settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
        heap = self.settings.kafka_heap
        argv = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:ActiveProcessorCount=2",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.dir / "server.properties"),
        ]
        return ManagedProcess(self.name, argv, self.settings.run_dir, self.settings.log_dir / "kafka.log")

    def prepare(self, *, progress: bool = False) -> ManagedProcess:
        """Fetch jars, write configs, format storage on first start; return the process to start."""
        java = check_java()
        libs = ensure_jars(self.settings, progress=progress)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "server.properties").write_text(_server_properties(self.settings, self.data_dir, self.node))
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        if not (self.data_dir / "meta.properties").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                [java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "-t",
                 self._cluster_id(),
                 "-c", str(self.dir / "server.properties")],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if result.returncode != 0:
                raise StackError(f"formatting Kafka storage in {self.data_dir} failed:\n{result.stderr[-2000:]}")
        return self.process(java, libs)

    def _cluster_id(self) -> str:
        """A new id for one broker; the cluster's shared one (created by its first node to format) for several."""
        if self.settings.kafka_brokers == 1:
            return _cluster_id()
        path = self.settings.home / "kafka-cluster.id"
        if not path.exists():
            path.write_text(_cluster_id())
        return path.read_text().strip()

    def healthy(self, timeout_s: float = 3.0) -> bool:
        """True when the broker answers a metadata request."""
        host, port = self.address.rsplit(":", 1)
        if not port_in_use(host, int(port)):
            return False  # fail fast: the admin client would retry the bootstrap for half a minute
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConfigurationError, KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.address,
                request_timeout_ms=int(timeout_s * 1000),
                client_id="fleet-health",
            )
        except KafkaConfigurationError:
            raise
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()


def _cluster_id() -> str:
    # KRaft cluster ids are 16 random bytes, base64url without padding (what `random-uuid` prints). Like
    # Kafka's own Uuid.randomUuid, never one that starts with "-": `StorageTool format -t -9tI...` reads
    # it as an option and fails (1 start in 64; it broke a CI run's SASL broker).
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
