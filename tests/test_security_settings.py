"""Kafka security settings: SASL_SSL + SCRAM-SHA-512 from the environment reach every Kafka client
(aiokafka kwargs, kafka-python admin kwargs, the Faust app's broker_credentials), the password stays
a SecretStr that no repr, error or log line shows, and a settings file holding it is refused.

No broker here: the embedded Tansu has no SASL. Building the Faust app does not connect.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from semwatch.settings import Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "pw-Xq7!r9-not-for-logs"
USERNAME = "semwatch-svc"
CA_CN = "semwatch-test-ca-7f3a"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory) -> Path:
    """A throwaway self-signed CA certificate (``cryptography`` when installed, else openssl)."""
    out = tmp_path_factory.mktemp("ca")
    cert = out / "ca.pem"
    try:
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(out / "ca.key"), "-out", str(cert), "-days", "2",
                        "-subj", f"/CN={CA_CN}", "-addext", "basicConstraints=critical,CA:TRUE"],
                       check=True, capture_output=True, timeout=60)
        return cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_CN)])
    now = dt.datetime.now(dt.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .sign(key, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return cert


@pytest.fixture
def sasl_env(monkeypatch, ca_file):
    for var in ("SEMWATCH_SETTINGS_FILE", "SEMWATCH_KAFKA__SSL_CERTFILE", "SEMWATCH_KAFKA__SSL_KEYFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SEMWATCH_BROKER_URL", "kafka://kafka-1.internal:9093;kafka://kafka-2.internal:9093")
    monkeypatch.setenv("SEMWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEMWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SEMWATCH_KAFKA__SASL_USERNAME", USERNAME)
    monkeypatch.setenv("SEMWATCH_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("SEMWATCH_KAFKA__SSL_CAFILE", str(ca_file))
    return ca_file


def _trusts_our_ca(ctx: ssl.SSLContext) -> bool:
    return any(dict(rdn[0] for rdn in c["subject"]).get("commonName") == CA_CN for c in ctx.get_ca_certs())


def test_env_settings_reach_aiokafka_and_kafka_python_kwargs(sasl_env):
    s = load_settings()
    assert s.kafka.security_protocol == "SASL_SSL"
    assert s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert isinstance(s.kafka.sasl_password, SecretStr)
    assert s.kafka.sasl_password.get_secret_value() == PASSWORD
    assert s.bootstrap_servers() == "kafka-1.internal:9093,kafka-2.internal:9093"

    kw = s.kafka_client_kwargs()  # aiokafka (pager) clients
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == USERNAME
    assert kw["sasl_plain_password"] == PASSWORD  # the clients need the plain value, nothing else does
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert _trusts_our_ca(ctx), "the CA file was not loaded into the SSL context"

    kp = s.kafka_python_kwargs()  # kafka-python: admin, producer
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kp["sasl_plain_username"] == USERNAME and kp["sasl_plain_password"] == PASSWORD
    assert _trusts_our_ca(kp["ssl_context"])


def test_faust_credentials_are_scram_sha_512_over_ssl(sasl_env):
    import faust
    from faust.types.auth import AuthProtocol, SASLMechanism

    creds = load_settings().faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism == SASLMechanism.SCRAM_SHA_512
    assert creds.protocol == AuthProtocol.SASL_SSL
    assert creds.username == USERNAME and creds.password == PASSWORD
    assert isinstance(creds.ssl_context, ssl.SSLContext) and _trusts_our_ca(creds.ssl_context)
    assert PASSWORD not in repr(creds)


def test_semwatch_app_conf_carries_broker_credentials(sasl_env):
    import faust
    from faust.types.auth import SASLMechanism

    from semwatch.config import load_config
    from streams.app import SemwatchApp

    settings = load_settings()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = SemwatchApp(settings, load_config(REPO / "config"))  # built, not started
        conf = app.app.conf
        creds = conf.broker_credentials
        assert isinstance(creds, faust.SASLCredentials)
        assert creds.mechanism == SASLMechanism.SCRAM_SHA_512
        assert creds.username == USERNAME and creds.password == PASSWORD
        assert creds.ssl_context is not None and _trusts_our_ca(creds.ssl_context)
        assert [str(u) for u in conf.broker] == ["kafka://kafka-1.internal:9093", "kafka://kafka-2.internal:9093"]
        assert PASSWORD not in repr(creds)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_password_never_shown(sasl_env, caplog):
    s = load_settings()
    for text in (repr(s), str(s), repr(s.kafka), str(s.kafka), f"{s!r}", s.model_dump_json(),
                 str(s.model_dump())):
        assert PASSWORD not in text
    assert "**********" in repr(s.kafka)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("semwatch.test").info("settings: %s / %r", s, s.kafka)
    assert PASSWORD not in caplog.text
    # A settings error elsewhere does not echo the environment, the password included.
    with pytest.raises(SettingsError) as err:
        load_settings(partitions=0)
    assert "partitions" in str(err.value) and PASSWORD not in str(err.value)


def test_settings_file_with_password_is_refused(tmp_path, monkeypatch, sasl_env):
    monkeypatch.delenv("SEMWATCH_KAFKA__SASL_PASSWORD")
    path = tmp_path / "settings.yaml"
    path.write_text("kafka:\n  security_protocol: SASL_SSL\n  sasl_username: svc\n"
                    "  sasl_password: hunter2-in-git\n")
    monkeypatch.setenv("SEMWATCH_SETTINGS_FILE", str(path))
    with pytest.raises(SettingsError) as err:
        Settings()
    msg = str(err.value)
    assert str(path) in msg and "kafka.sasl_password" in msg and "SEMWATCH_KAFKA__SASL_PASSWORD" in msg
    assert "hunter2-in-git" not in msg
    # The same file without the password is accepted, the password then coming from the environment.
    path.write_text("kafka:\n  security_protocol: SASL_SSL\n  sasl_username: svc\n")
    monkeypatch.setenv("SEMWATCH_KAFKA__SASL_PASSWORD", PASSWORD)
    s = Settings()
    assert s.kafka.sasl_password.get_secret_value() == PASSWORD


def test_plaintext_default_has_no_credentials(monkeypatch):
    for var in ("SEMWATCH_KAFKA__SECURITY_PROTOCOL", "SEMWATCH_KAFKA__SASL_MECHANISM",
                "SEMWATCH_KAFKA__SASL_USERNAME", "SEMWATCH_KAFKA__SASL_PASSWORD",
                "SEMWATCH_KAFKA__SSL_CAFILE", "SEMWATCH_SETTINGS_FILE"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(broker_url="kafka://localhost:9092")
    assert s.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert s.faust_credentials() is None


def test_pagerduty_routing_key_is_a_secret_from_the_environment_only(tmp_path, monkeypatch):
    key = "R0UTING-key-not-for-logs"
    monkeypatch.delenv("SEMWATCH_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("SEMWATCH_PAGERDUTY_ROUTING_KEY", key)
    s = load_settings()
    assert isinstance(s.pagerduty_routing_key, SecretStr)
    assert s.pagerduty_routing_key.get_secret_value() == key
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert key not in text
    # A settings file holding the key is refused, naming the variable to use instead.
    monkeypatch.delenv("SEMWATCH_PAGERDUTY_ROUTING_KEY")
    path = tmp_path / "settings.yaml"
    path.write_text(f"alertmanager_url: http://am:9093\npagerduty_routing_key: {key}\n")
    monkeypatch.setenv("SEMWATCH_SETTINGS_FILE", str(path))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "SEMWATCH_PAGERDUTY_ROUTING_KEY" in str(err.value) and key not in str(err.value)
