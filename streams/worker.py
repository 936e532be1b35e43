"""``semwatch worker``: one Faust worker process (starting the embedded broker when none is set)."""

from __future__ import annotations

import asyncio
import logging
import sys

from semwatch.broker import EmbeddedBroker
from semwatch.config import load_config
from semwatch.settings import SettingsError, load_settings

log = logging.getLogger("semwatch.worker")


def add_arguments(parser) -> None:
    parser.add_argument("--broker", help="Kafka bootstrap (kafka://host:9092); default: "
                        "SEMWATCH_BROKER_URL, else an embedded broker is started")
    parser.add_argument("--config", help="config directory (default: SEMWATCH_CONFIG_DIR or ./config)")
    parser.add_argument("--metrics-port", type=int, help="port for /metrics (0 = any free port)")
    parser.add_argument("--partitions", type=int, help="partitions of the topics semwatch creates")


def run(args) -> int:
    overrides = {}
    if args.broker:
        overrides["broker_url"] = args.broker
    if args.config:
        overrides["config_dir"] = args.config
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.partitions:
        overrides["partitions"] = args.partitions
    settings = load_settings(**overrides)
    config = load_config(settings.config_dir)  # fails fast on a bad config, before any broker
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    broker = None
    try:
        if not settings.broker_url:
            broker = EmbeddedBroker().start()
            settings = settings.model_copy(update={"broker_url": broker.url})
            print(f"semwatch: embedded broker (Tansu) at {broker.bootstrap}", file=sys.stderr, flush=True)
        return _run_faust(settings, config)
    finally:
        if broker is not None:
            broker.stop()


def ensure_topics(settings) -> None:
    """Create semwatch's topics with the configured partition count before Faust subscribes.

    Brokers that auto-create topics on first metadata request (Tansu does) would otherwise create
    them with their own default partition count, and the keyed topic and the state changelog must
    agree. Existing topics are left as they are.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers().split(","),
                             client_id=f"{settings.app_id}-admin", **settings.kafka_python_kwargs())
    try:
        changelog = f"{settings.app_id}-state-changelog"
        names = [settings.topics.runs, settings.topics.incidents, settings.topics.dlq, settings.topics.feedback,
                 f"{settings.app_id}.runs.keyed", changelog]
        if settings.otlp_enabled:
            names.append(settings.topics.otlp)
        existing = set(admin.list_topics())
        rf = settings.replication_factor
        # The state changelog is compacted: only the latest record of each key is needed to
        # recover, and an uncompacted changelog grows without bound (and recovery slows with it).
        missing = [NewTopic(n, settings.partitions, rf,
                            topic_configs={"cleanup.policy": "compact"} if n == changelog else {})
                   for n in names if n not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        check_changelog(admin, changelog, rf)
    finally:
        admin.close()


def check_changelog(admin, topic: str, replication_factor: int) -> None:
    """At start: the state changelog must be compacted and as replicated as configured. A broker
    that cannot describe topic configs (the embedded Tansu) is let through with a note."""
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {c[0]: c[1] for c in described[0].resources[0][4]}
    except Exception as exc:  # noqa: BLE001 - a broker without DescribeConfigs
        log.info("could not read the configs of %s (%s); not checking its compaction", topic, exc)
        return
    policy = entries.get("cleanup.policy")
    if policy is not None and "compact" not in str(policy):
        raise SettingsError(f"topic {topic}: cleanup.policy is {policy!r}; the state changelog must be "
                            f"compacted (kafka-configs --alter --entity-type topics --entity-name {topic} "
                            "--add-config cleanup.policy=compact)")
    try:
        meta = admin.describe_topics([topic])
        replicas = min(len(p["replicas"]) for p in meta[0]["partitions"])
    except Exception:  # noqa: BLE001 - a broker without full topic metadata
        return
    if replicas < replication_factor:
        log.warning("topic %s has %d replica(s), fewer than SEMWATCH_REPLICATION_FACTOR=%d: a broker "
                    "loss can lose detector state", topic, replicas, replication_factor)


def _run_faust(settings, config) -> int:
    import faust

    from sinks.metrics import WorkerMetrics
    from streams.app import SemwatchApp

    ensure_topics(settings)
    # Faust (mode) wants an event loop set before the app is built.
    asyncio.set_event_loop(asyncio.new_event_loop())
    metrics = WorkerMetrics()
    port = metrics.serve(settings.metrics_port)
    print(f"semwatch: metrics at http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    app = SemwatchApp(settings, config, metrics)
    worker = faust.Worker(app.app, loglevel=settings.log_level.lower(), quiet=True,
                          override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
