"""Process settings: environment (``SEMWATCH_`` prefix, ``__`` for nesting) over an optional YAML file.

Detector and rule definitions are not settings: they live in the config directory
(``config/semwatch.yaml`` and friends) and are loaded by :mod:`semwatch.config`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


class Topics(BaseModel):
    model_config = ConfigDict(frozen=True)

    runs: str = "semwatch.runs"
    incidents: str = "semwatch.incidents"
    # The pager's memory of what it delivered (compacted; see sinks/pager/ledger.py).
    pager_delivered: str = "semwatch.pager.delivered"
    dlq: str = "semwatch.runs.dlq"
    otlp: str = "semwatch.otlp.spans"
    # On-call feedback: false-alarm marks (semwatch mark-false-alarm), counted by the workers.
    feedback: str = "semwatch.feedback"


class KafkaSecurity(BaseModel):
    """Client security settings; secrets only from the environment (never from files in git)."""

    model_config = ConfigDict(frozen=True)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[SecretStr] = None
    ssl_cafile: Optional[Path] = None
    ssl_certfile: Optional[Path] = None
    ssl_keyfile: Optional[Path] = None
    ssl_check_hostname: bool = True


class PagerSettings(BaseModel):
    """``semwatch page``: delivery and memory (``SEMWATCH_PAGER__*``; each has a CLI flag that wins).

    A page is retried until the target takes it or refuses it for good: there is no attempt limit
    or deadline to set, only how fast retries back off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # One HTTP request.
    request_timeout_s: float = Field(default=10.0, gt=0)
    # First retry delay; doubles per attempt (with jitter) up to backoff_max_s. A smaller cap
    # notices a recovered target sooner and sends more requests to a down one.
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # Open alerts are re-sent to Alertmanager this often: keep it well below its resolve_timeout.
    resend_interval_s: float = Field(default=60.0, gt=0)
    # Segment keys sent as Alertmanager labels (comma-separated in the environment): bounded
    # values only, they are Alertmanager's grouping keys. Names are checked when the pager starts.
    segment_labels: Annotated[tuple[str, ...], NoDecode] = ("app", "route", "model", "prompt_version")
    # Resolved problems (dedup keys) remembered per target, besides every open one. One forgotten
    # can be paged again if its old records are read again (a group re-reading the topic).
    lru_size: int = Field(default=10000, ge=1)
    # Open Alertmanager alerts kept for re-sending.
    max_open: int = Field(default=10000, ge=1)
    # Records waiting at one target beyond which the pager stops reading the incidents topic
    # (memory bound during a long outage; every target then waits for the slowest).
    max_backlog: int = Field(default=10000, ge=1)

    @field_validator("segment_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        return tuple(str(v).strip() for v in value if str(v).strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEMWATCH_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    # kafka://host:9092[;kafka://host2:9092] or host:port[,host:port]; unset -> embedded Tansu broker.
    broker_url: Optional[str] = None
    app_id: str = "semwatch"
    topics: Topics = Topics()
    partitions: int = Field(default=4, ge=1, le=1024)
    kafka: KafkaSecurity = KafkaSecurity()
    config_dir: Path = REPO_CONFIG_DIR
    # Faust table store: memory:// (state rebuilt from the changelog on start) or rocksdb://.
    store: str = "memory://"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    web_port: int = Field(default=6066, ge=0, le=65535)
    max_record_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Event time must be plausible against the wall clock, or the record is dead-lettered (reason
    # clock): at most this far in the future, and (when > 0) at most this old.
    max_future_skew_s: float = Field(default=300.0, gt=0)
    max_event_age_s: float = Field(default=0.0, ge=0)
    # Replication factor of the topics semwatch creates (changelogs included); checked at start.
    replication_factor: int = Field(default=1, ge=1, le=16)
    # Batch size and wait of the agents (stream.take): bigger batches, fewer changelog writes. The
    # wait is latency at low rates (one per stage); under load batches fill first (bench: no loss).
    batch_max: int = Field(default=2000, ge=1)
    batch_within_s: float = Field(default=0.05, gt=0)
    # Valid events travel to the detect stage packed into records of at most this many bytes (one
    # record per partition key and input partition per batch): Faust's per-record cost, not the
    # bytes, bounds the worker, so packing removes most of the repartition hop's cost.
    hop_record_bytes: int = Field(default=64 * 1024, ge=1024)
    # Reordering across input partitions: a source quiet this long stops holding the others back.
    reorder_idle_s: float = Field(default=2.0, gt=0)
    # Bytes fetched per partition per request: small keeps partitions close in event time.
    fetch_partition_bytes: int = Field(default=256 * 1024, ge=16384)
    # Longest a fetch waits for data (Faust hard-codes 1.5 s). Kafka answers a waiting fetch as
    # soon as data arrives, but some brokers (Tansu, the embedded one) wait the full time: each
    # hop then added ~0.4 s p50 / 0.7 s p90 of latency at low rates. Idle cost: ~10 requests/s.
    fetch_max_wait_s: float = Field(default=0.1, gt=0, le=10)
    # Producer batching (keyed topic, changelog, incidents).
    producer_linger_s: float = Field(default=0.01, ge=0)
    producer_batch_bytes: int = Field(default=1024 * 1024, ge=16384)
    # Consumer group session timeout: how soon a dead worker's partitions move to a survivor.
    session_timeout_s: float = Field(default=30.0, gt=1)
    log_level: str = "INFO"
    # Also read OTLP/JSON trace exports (OpenTelemetry Collector kafka exporter, encoding otlp_json)
    # from topics.otlp and turn GenAI spans into run events on topics.runs.
    otlp_enabled: bool = False
    # Paging targets of `semwatch page` (names kept from before they were settings). The routing
    # key comes from the environment only: a settings file holding it is refused.
    alertmanager_url: Optional[str] = None
    pagerduty_url: Optional[str] = None
    pagerduty_routing_key: Optional[SecretStr] = None
    pager: PagerSettings = PagerSettings()

    @field_validator("alertmanager_url", "pagerduty_url", "pagerduty_routing_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # docker compose passes an unset variable as "" (`${PAGERDUTY_ROUTING_KEY:-}`).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("alertmanager_url", "pagerduty_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    def bootstrap_servers(self) -> str:
        if not self.broker_url:
            raise RuntimeError("no broker configured (the embedded broker sets broker_url)")
        hosts = []
        for part in self.broker_url.replace(";", ",").split(","):
            part = part.strip()
            if part.startswith("kafka://"):
                part = part[len("kafka://") :]
            if part:
                hosts.append(part)
        return ",".join(hosts)

    def faust_broker(self) -> str:
        return ";".join(f"kafka://{h}" for h in self.bootstrap_servers().split(","))

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (security)."""
        sec = self.kafka
        kwargs: dict[str, Any] = {"security_protocol": sec.security_protocol}
        if sec.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            kwargs["sasl_mechanism"] = sec.sasl_mechanism or "SCRAM-SHA-512"
            kwargs["sasl_plain_username"] = sec.sasl_username
            kwargs["sasl_plain_password"] = (
                sec.sasl_password.get_secret_value() if sec.sasl_password else None
            )
        if sec.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (admin, producer): the same security settings
        under kafka-python's names."""
        sec = self.kafka_client_kwargs()
        kwargs = {"security_protocol": sec.pop("security_protocol")}
        if "sasl_mechanism" in sec:
            kwargs.update(sasl_mechanism=sec["sasl_mechanism"], sasl_plain_username=sec["sasl_plain_username"],
                          sasl_plain_password=sec["sasl_plain_password"])
        if "ssl_context" in sec:
            kwargs["ssl_context"] = sec["ssl_context"]
        return kwargs

    def ssl_context(self):
        import ssl

        sec = self.kafka
        ctx = ssl.create_default_context(cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None)
        if sec.ssl_certfile:
            ctx.load_cert_chain(
                str(sec.ssl_certfile), str(sec.ssl_keyfile) if sec.ssl_keyfile else None
            )
        ctx.check_hostname = sec.ssl_check_hostname
        return ctx

    def faust_credentials(self):
        """Faust's credentials object for the configured security settings (None for plaintext)."""
        import faust

        sec = self.kafka
        if sec.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            from faust.types.auth import SASLMechanism

            mechanism = SASLMechanism(sec.sasl_mechanism or "SCRAM-SHA-512")
            return faust.SASLCredentials(
                username=sec.sasl_username,
                password=sec.sasl_password.get_secret_value() if sec.sasl_password else None,
                mechanism=mechanism,
                ssl_context=self.ssl_context() if sec.security_protocol == "SASL_SSL" else None,
            )
        if sec.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        return None


class _YamlSource(PydanticBaseSettingsSource):
    """Optional settings file named by ``SEMWATCH_SETTINGS_FILE`` (lowest priority)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - not used
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("SEMWATCH_SETTINGS_FILE")
        if not path:
            return {}
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"{path}: cannot read settings file: {exc}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: settings file must be a mapping of setting names")
        if "kafka" in data and isinstance(data["kafka"], dict) and "sasl_password" in data["kafka"]:
            raise SettingsError(
                f"{path}: kafka.sasl_password must come from the environment "
                "(SEMWATCH_KAFKA__SASL_PASSWORD), not from a file"
            )
        if "pagerduty_routing_key" in data:
            raise SettingsError(
                f"{path}: pagerduty_routing_key must come from the environment "
                "(SEMWATCH_PAGERDUTY_ROUTING_KEY), not from a file"
            )
        return data


class SettingsError(ValueError):
    pass


def load_settings(**overrides: Any) -> Settings:
    """Settings with errors that name the field and where it came from."""
    try:
        return Settings(**overrides)
    except SourceError as exc:  # e.g. a nested setting given as JSON that does not parse
        raise SettingsError(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            env = "SEMWATCH_" + "__".join(str(p).upper() for p in e["loc"])
            lines.append(f"setting {loc} (env {env}): {e['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
