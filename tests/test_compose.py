"""Static checks of docker-compose.yml, the Dockerfile and config/otel-collector.yaml against the code.

No Docker needed: the files are parsed and cross-checked with each other and with the code they
configure (the `semwatch` commands, the Settings model, the pager's environment variables, the
Prometheus / Alertmanager / Grafana configs in config/), so that renaming a setting, a command, a
port or a config file breaks a test here instead of the compose stack at a user's.
"""

from __future__ import annotations

import re
import shlex
import typing
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from semwatch.cli import COMMANDS
from semwatch.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "config" / "alertmanager" / "alertmanager.yml"
GRAFANA_PROVISIONING = ROOT / "config" / "grafana" / "provisioning"
GRAFANA_DASHBOARD = ROOT / "config" / "grafana" / "semwatch-dashboard.json"
OTEL_CONFIG = ROOT / "config" / "otel-collector.yaml"
PAGER_MODULE = ROOT / "sinks" / "pager" / "agent.py"

# Settings only `semwatch page` (sinks/pager/agent.py) uses: its paging targets. They are Settings
# fields (names kept from when the pager read them itself); a worker ignores them.
# test_pager_env_names_are_read_by_the_pager checks each one against Settings and the pager's
# source, so a rename there fails here.
PAGER_ENV = {"SEMWATCH_ALERTMANAGER_URL", "SEMWATCH_PAGERDUTY_URL", "SEMWATCH_PAGERDUTY_ROUTING_KEY"}

# Alertmanager webhook hosts that are documented placeholders rather than compose services
# (host -> where it is documented). Empty: the example webhook receiver (pager-webhook) is a
# service of the stack.
WEBHOOK_PLACEHOLDERS: dict[str, str] = {}

TOP_LEVEL_KEYS = {"name", "services", "volumes", "networks", "secrets", "configs"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

def _load_yaml(path: Path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose() -> dict:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), \
        "docker-compose.yml must be a mapping with a `services` mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def pyproject() -> dict:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # Python 3.10 (requires-python >= 3.10)
        tomllib = pytest.importorskip("tomli")
    with open(PYPROJECT, "rb") as fh:
        return tomllib.load(fh)


def package_version() -> str:
    return pyproject()["project"]["version"]


def as_list(value) -> list[str]:
    """A compose command / entrypoint (string or list) as a list of words."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            name, _, value = str(item).partition("=")
            out[name] = value
        return out
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def is_semwatch_service(service: dict) -> bool:
    """Runs the semwatch image with its own entrypoint (`semwatch`): the command is a subcommand."""
    return "build" in service and "entrypoint" not in service


def semwatch_services(services: dict) -> dict[str, dict]:
    return {name: svc for name, svc in services.items() if is_semwatch_service(svc)}


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts; named volumes are skipped."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append((vol["source"], vol["target"]))
            continue
        parts = str(vol).split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/", "~")):
            out.append((parts[0], parts[1]))
    return out


def named_volumes(service: dict) -> list[str]:
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "volume" and vol.get("source"):
                out.append(vol["source"])
            continue
        parts = str(vol).split(":")
        if len(parts) >= 2 and not parts[0].startswith((".", "/", "~")):
            out.append(parts[0])
    return out


def mount_source(service: dict, container_path: str) -> Path | None:
    """The repository file bind-mounted at container_path, or None."""
    for host, target in bind_mounts(service):
        if target.rstrip("/") == container_path.rstrip("/"):
            return (ROOT / host).resolve()
    return None


def container_ports(service: dict) -> set[int]:
    """Ports the service listens on as declared by `expose` and the container side of `ports`."""
    ports: set[int] = set()
    for item in service.get("expose") or []:
        ports.add(int(str(item).split("/")[0]))
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            ports.add(int(item["target"]))
            continue
        spec = str(item).split("/")[0]
        ports.add(int(spec.rsplit(":", 1)[-1]))
    return ports


def listening_metrics_port(name: str, service: dict) -> int:
    """The port a semwatch service serves /metrics on, from its command and environment."""
    command = as_list(service.get("command"))
    if "--metrics-port" in command:
        return int(command[command.index("--metrics-port") + 1])
    if command and command[0] == "page":
        from sinks.pager.agent import DEFAULT_METRICS_PORT  # the pager's own flag, default 9465
        return DEFAULT_METRICS_PORT
    env = environment(service)
    if "SEMWATCH_METRICS_PORT" in env:
        return int(env["SEMWATCH_METRICS_PORT"])
    return Settings.model_fields["metrics_port"].default


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"{address!r} is not host:port"
    return host, int(port)


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port or default
    assert parts.hostname and port, f"{url!r} has no host/port"
    return parts.hostname, port


def assert_served(services: dict, host: str, port: int, where: str) -> None:
    assert host in services, f"{where}: host {host!r} is not a docker-compose service"
    svc = services[host]
    assert port in container_ports(svc), (
        f"{where}: service {host!r} does not expose port {port} (expose/ports: "
        f"{sorted(container_ports(svc))})")
    if is_semwatch_service(svc) and as_list(svc.get("command"))[:1] in (["worker"], ["page"]):
        actual = listening_metrics_port(host, svc)
        assert actual == port, f"{where}: {host} serves /metrics on {actual}, not {port}"


def settings_env_names() -> set[str]:
    """Every SEMWATCH_* name pydantic-settings reads: fields, and nested model fields joined by __."""
    names: set[str] = set()

    def model_of(annotation):
        candidates = [annotation, *typing.get_args(annotation)]
        for c in candidates:
            if isinstance(c, type) and issubclass(c, BaseModel):
                return c
        return None

    def walk(model: type[BaseModel], prefix: str) -> None:
        for field_name, field in model.model_fields.items():
            env = f"{prefix}{field_name.upper()}"
            names.add(env)  # a nested model can also be set whole, as JSON
            nested = model_of(field.annotation)
            if nested is not None:
                walk(nested, env + "__")

    walk(Settings, "SEMWATCH_")
    return names


def flag_value(words: list[str], flag: str) -> str | None:
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------------------------
# docker-compose.yml on its own
# ------------------------------------------------------------------------------------------------

def test_compose_top_level_keys(compose):
    unknown = {k for k in compose if k not in TOP_LEVEL_KEYS and not str(k).startswith("x-")}
    assert not unknown, f"unknown top-level keys in docker-compose.yml: {sorted(unknown)}"
    assert "version" not in compose, "`version` is obsolete in the Compose specification"


def test_every_image_is_pinned(services):
    version = package_version()
    for name, svc in services.items():
        image = svc.get("image")
        assert image or "build" in svc, f"service {name}: neither image nor build"
        if not image:
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"service {name}: image {image!r} has no tag (means :latest)"
        tag = last.rsplit(":", 1)[1]
        assert tag.lower() != "latest", f"service {name}: image {image!r} uses :latest"
        assert re.search(r"\d+\.\d+", tag), f"service {name}: tag {tag!r} of {image!r} is not a version"
        assert "${" not in image, f"service {name}: image {image!r} depends on an environment variable"
        if "build" in svc:
            assert tag == version, (f"service {name}: locally built image {image!r} should be tagged "
                                    f"with the package version {version} (pyproject.toml)")


def test_bind_mounted_paths_exist(services):
    for name, svc in services.items():
        for host, _target in bind_mounts(svc):
            assert not host.startswith(("/", "~")), \
                f"service {name}: bind mount {host!r} is outside the repository"
            assert (ROOT / host).exists(), f"service {name}: bind-mounted {host!r} does not exist"
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (ROOT / context / dockerfile).is_file(), f"service {name}: no {context}/{dockerfile}"


def test_named_volumes_are_declared(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for vol in named_volumes(svc):
            assert vol in declared, f"service {name}: volume {vol!r} is not declared under `volumes:`"


def test_semwatch_commands_are_real_subcommands(services):
    found = semwatch_services(services)
    assert {"worker-1", "worker-2", "pager"} <= set(found), \
        f"expected semwatch services worker-1, worker-2, pager; found {sorted(found)}"
    for name, svc in found.items():
        command = as_list(svc.get("command"))
        assert command, f"service {name}: no command (the image's default would run)"
        assert command[0] in COMMANDS, (f"service {name}: {command[0]!r} is not a semwatch command "
                                        f"(semwatch.cli.COMMANDS: {sorted(COMMANDS)})")
    assert as_list(services["worker-1"]["command"])[0] == "worker"
    assert as_list(services["worker-2"]["command"])[0] == "worker"
    assert as_list(services["pager"]["command"])[0] == "page"


def test_semwatch_environment_names_are_settings(services):
    known = settings_env_names()
    for name, svc in services.items():
        for env in environment(svc):
            if not env.upper().startswith("SEMWATCH_"):
                continue
            if env in PAGER_ENV:
                command = as_list(svc.get("command"))
                assert command[:1] == ["page"], \
                    f"service {name}: {env} is read only by `semwatch page`, not by {command[:1]}"
                continue
            assert env.upper() in known, (
                f"service {name}: {env} is not a semwatch setting (Settings fields, nested with __) "
                f"nor a pager variable {sorted(PAGER_ENV)}")


def test_pager_env_names_are_read_by_the_pager():
    # Settings fields, named in the pager's start-up errors (sinks/pager/agent.py).
    known = settings_env_names()
    source = PAGER_MODULE.read_text(encoding="utf-8")
    for env in sorted(PAGER_ENV):
        assert env in known, f"{env} is documented for the pager but is not a Settings field"
        assert env in source, f"{env} is documented for the pager but sinks/pager/agent.py never names it"


def test_semwatch_environment_values_validate(services, monkeypatch):
    """The values compose sets are accepted by Settings (types, ranges), service by service."""
    import os

    for name, svc in semwatch_services(services).items():
        with monkeypatch.context() as m:
            for env in list(os.environ):
                if env.upper().startswith("SEMWATCH_"):
                    m.delenv(env)
            for env, value in environment(svc).items():
                if env.upper().startswith("SEMWATCH_") and "${" not in value:
                    m.setenv(env, value)
            settings = Settings()
            assert settings.broker_url, f"service {name}: no SEMWATCH_BROKER_URL (would start an embedded broker)"


def test_workers_share_one_configuration(services):
    """All workers of the group must agree on everything but nothing: app id, partitions, topics, config."""
    workers = {n: s for n, s in semwatch_services(services).items()
               if as_list(s.get("command"))[:1] == ["worker"]}
    assert len(workers) >= 2
    envs = {n: environment(s) for n, s in workers.items()}
    first = next(iter(envs.values()))
    for n, env in envs.items():
        assert env == first, f"worker {n} differs from the other workers: {env} vs {first}"
        assert env.get("SEMWATCH_CONFIG_DIR") == "/app/config"
        assert mount_source(workers[n], "/app/config") == (ROOT / "config").resolve(), \
            f"worker {n}: config/ is not mounted at SEMWATCH_CONFIG_DIR"
        assert any(str(v).endswith(":ro") for v in workers[n].get("volumes") or []), \
            f"worker {n}: config should be mounted read-only"


def test_topic_init_matches_settings(services):
    workers = [s for s in semwatch_services(services).values() if as_list(s.get("command"))[:1] == ["worker"]]
    partitions = {environment(w).get("SEMWATCH_PARTITIONS") for w in workers}
    assert len(partitions) == 1 and None not in partitions, "workers must all set SEMWATCH_PARTITIONS"
    partitions = partitions.pop()
    init = services["topic-init"]
    script = " ".join(as_list(init.get("entrypoint")) + as_list(init.get("command")))
    topics = Settings().topics
    for topic in (topics.runs, topics.incidents, topics.dlq, topics.otlp, topics.pager_delivered):
        assert topic in script, f"topic-init does not create {topic}"
    # The pager's ledger keeps one record per key: compacted.
    ledger = script[script.index(topics.pager_delivered):].split("kafka-topics.sh")[0]
    assert "cleanup.policy=compact" in ledger, "topic-init must create the pager's ledger compacted"
    assert "--partitions" in script
    declared = environment(init).get("PARTITIONS")
    assert declared == partitions, (f"topic-init creates {declared} partitions but workers use "
                                    f"SEMWATCH_PARTITIONS={partitions}")
    assert init.get("restart", "no") in ("no", False), "a one-shot service must not restart"


def test_broker_url_matches_kafka_listener(services):
    kafka = environment(services["kafka"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"]
    listeners = {split_host_port(l.split("://", 1)[1]) for l in advertised.split(",")}
    for name, svc in semwatch_services(services).items():
        url = environment(svc)["SEMWATCH_BROKER_URL"]
        for part in url.replace(";", ",").split(","):
            hp = split_host_port(part.strip().removeprefix("kafka://"))
            assert hp in listeners, f"service {name}: {url} is not an advertised listener ({advertised})"
            assert hp[0] in services, f"service {name}: broker host {hp[0]} is not a compose service"


def test_depends_on_references(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"service {name} depends on unknown service {dep!r}"
            assert dep != name
            condition = (spec or {}).get("condition", "service_started")
            assert condition in DEPENDS_CONDITIONS, f"service {name}: bad condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], \
                    f"service {name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") in ("no", False), \
                    f"service {name} waits for {dep} to complete, but {dep} restarts"
            # An always-on service must not depend on an optional (profile) one.
            if services[dep].get("profiles") and not svc.get("profiles"):
                pytest.fail(f"service {name} depends on {dep}, which only runs with a profile")

    # No cycles.
    def visit(node, path):
        assert node not in path, f"depends_on cycle: {' -> '.join(path + [node])}"
        deps = services[node].get("depends_on") or {}
        for dep in deps:
            visit(dep, path + [node])

    for name in services:
        visit(name, [])


def test_healthchecks_probe_the_declared_port(services):
    for name, svc in semwatch_services(services).items():
        check = " ".join(as_list((svc.get("healthcheck") or {}).get("test")))
        assert check, f"service {name}: no healthcheck"
        port = listening_metrics_port(name, svc)
        assert f":{port}/" in check, f"service {name}: healthcheck does not probe its /metrics port {port}"


def test_no_secrets_in_compose_file(services):
    """Secrets come from the environment of `docker compose` (${VAR}), never literal values."""
    secret_like = re.compile(r"(KEY|PASSWORD|SECRET|TOKEN)$")
    for name, svc in services.items():
        for env, value in environment(svc).items():
            if secret_like.search(env.upper()) and env != "GF_SECURITY_ADMIN_PASSWORD":
                assert value.startswith("${") or value == "", \
                    f"service {name}: {env} has a literal value in docker-compose.yml"
    pager = environment(services["pager"])
    assert pager["SEMWATCH_PAGERDUTY_ROUTING_KEY"].startswith("${PAGERDUTY_ROUTING_KEY")


# ------------------------------------------------------------------------------------------------
# Prometheus, Alertmanager, Grafana configs vs the compose services
# ------------------------------------------------------------------------------------------------

def test_prometheus_scrape_targets_are_compose_services(services):
    prom = _load_yaml(PROMETHEUS_CONFIG)
    scraped: set[str] = set()
    for job in prom["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, port = split_host_port(target)
                if host == "localhost" and job["job_name"] == "prometheus":
                    assert port in container_ports(services["prometheus"])
                    continue
                assert_served(services, host, port, f"prometheus job {job['job_name']} target {target}")
                scraped.add(host)
    for name, svc in semwatch_services(services).items():
        if as_list(svc.get("command"))[:1] in (["worker"], ["page"]):
            assert name in scraped, f"semwatch service {name} is not scraped by Prometheus"
    for am in prom.get("alerting", {}).get("alertmanagers", []):
        for static in am.get("static_configs", []):
            for target in static.get("targets", []):
                host, port = split_host_port(target)
                assert_served(services, host, port, f"prometheus alerting target {target}")


def test_prometheus_config_and_rule_files_are_mounted(services):
    svc = services["prometheus"]
    command = as_list(svc.get("command"))
    config_path = flag_value(command, "--config.file") or "/etc/prometheus/prometheus.yml"
    assert mount_source(svc, config_path) == PROMETHEUS_CONFIG.resolve(), \
        f"config/prometheus/prometheus.yml is not mounted at {config_path}"
    prom = _load_yaml(PROMETHEUS_CONFIG)
    assert prom.get("rule_files"), "prometheus.yml loads no rule files"
    for rule_file in prom["rule_files"]:
        path = rule_file if rule_file.startswith("/") else str(Path(config_path).parent / rule_file)
        source = mount_source(svc, path)
        assert source is not None, f"rule file {rule_file} is not mounted into the prometheus service"
        assert source.is_file() and source.parent == PROMETHEUS_CONFIG.parent.resolve(), source


def test_alertmanager_config_is_mounted(services):
    svc = services["alertmanager"]
    words = as_list(svc.get("entrypoint")) + as_list(svc.get("command"))
    script = " ".join(words)
    match = re.search(r"--config\.file[= ](\S+)", script)
    config_path = match.group(1) if match else "/etc/alertmanager/alertmanager.yml"
    assert mount_source(svc, config_path) == ALERTMANAGER_CONFIG.resolve(), \
        f"config/alertmanager/alertmanager.yml is not mounted at {config_path}"


def test_alertmanager_receivers_point_at_services(services):
    am = _load_yaml(ALERTMANAGER_CONFIG)
    svc = services["alertmanager"]
    script = " ".join(as_list(svc.get("entrypoint")) + as_list(svc.get("command")))
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            host, port = url_host_port(hook["url"])
            if host in WEBHOOK_PLACEHOLDERS:
                continue
            assert_served(services, host, port, f"alertmanager receiver {receiver['name']} webhook")
        for pd in receiver.get("pagerduty_configs", []):
            key_file = pd.get("routing_key_file") or pd.get("service_key_file")
            if key_file:
                # Provided either by a mount or written by the service's start script.
                assert mount_source(svc, key_file) is not None or key_file in script, \
                    f"alertmanager: {key_file} is neither mounted nor written at start"
            assert "routing_key" not in pd and "service_key" not in pd, \
                "PagerDuty keys must not be in config/alertmanager/alertmanager.yml"


def test_pager_targets_point_at_services(services):
    env = environment(services["pager"])
    host, port = url_host_port(env["SEMWATCH_ALERTMANAGER_URL"])
    assert_served(services, host, port, "pager SEMWATCH_ALERTMANAGER_URL")


def test_grafana_provisioning_matches_mounts(services):
    svc = services["grafana"]
    assert mount_source(svc, "/etc/grafana/provisioning") == GRAFANA_PROVISIONING.resolve(), \
        "config/grafana/provisioning is not mounted at /etc/grafana/provisioning"
    # Dashboard providers: their folder must hold the mounted dashboard JSON.
    mounted_dashboards = {target: (ROOT / host).resolve() for host, target in bind_mounts(svc)
                          if target.endswith(".json")}
    assert GRAFANA_DASHBOARD.resolve() in mounted_dashboards.values(), "the dashboard JSON is not mounted"
    for provider_file in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml")):
        for provider in _load_yaml(provider_file).get("providers", []):
            folder = provider["options"]["path"].rstrip("/")
            inside = [t for t in mounted_dashboards if str(Path(t).parent) == folder]
            assert inside, f"{provider_file.name}: no dashboard is mounted into {folder}"
    # Datasources: their URLs point at compose services.
    for ds_file in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml")):
        for ds in _load_yaml(ds_file).get("datasources", []):
            host, port = url_host_port(ds["url"])
            assert_served(services, host, port, f"grafana datasource {ds['name']}")


# ------------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------------

def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_entrypoint_is_semwatch():
    assert DOCKERFILE.is_file(), "Dockerfile missing"
    instructions = _dockerfile_instructions()
    entrypoints = [rest for kw, rest in instructions if kw == "ENTRYPOINT"]
    assert entrypoints, "Dockerfile has no ENTRYPOINT"
    assert yaml.safe_load(entrypoints[-1]) == ["semwatch"], f"ENTRYPOINT is {entrypoints[-1]}"


def test_dockerfile_base_is_pinned_and_user_is_not_root():
    instructions = _dockerfile_instructions()
    bases = [rest.split()[0] for kw, rest in instructions if kw == "FROM"]
    assert bases
    for base in bases:
        name, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), f"FROM {base} is not pinned"
        assert name.endswith("python") and tag.startswith("3.11."), f"FROM {base}: expected python:3.11.x"
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert any(kw == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", rest + " ")
               for kw, rest in instructions), "Dockerfile does not `pip install .`"


def test_dockerfile_copies_every_package():
    """A package added to pyproject.toml but not copied into the image would be missing there."""
    project = pyproject()
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set()
    for kw, rest in _dockerfile_instructions():
        if kw == "COPY" and "--from" not in rest:
            words = rest.split()
            copied.update(w.strip("/").removeprefix("./") for w in words[:-1] if not w.startswith("--"))
    for package in packages:
        top = package.split(".")[0].rstrip("*")
        assert top in copied, f"Dockerfile does not COPY package {top!r} (pyproject.toml packages)"
        assert (ROOT / top).is_dir()
    readme = project["project"].get("readme")
    if readme:
        assert readme in copied, f"pyproject.toml needs {readme} to build; the Dockerfile does not COPY it"
    assert "pyproject.toml" in copied


# ------------------------------------------------------------------------------------------------
# OpenTelemetry Collector
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def otel() -> dict:
    data = _load_yaml(OTEL_CONFIG)
    assert isinstance(data, dict)
    return data


def _component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def test_otel_pipelines_are_consistent(otel):
    pipelines = otel["service"]["pipelines"]
    assert pipelines, "no pipelines"
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_id, pipeline in pipelines.items():
        assert _component_type(pipeline_id) in ("traces", "metrics", "logs")
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"pipeline {pipeline_id} is incomplete"
        for kind in used:
            for component in pipeline.get(kind, []) or []:
                assert component in (otel.get(kind) or {}), \
                    f"pipeline {pipeline_id} uses {kind[:-1]} {component!r}, which is not defined"
                used[kind].add(component)
    for kind in used:
        unused = set(otel.get(kind) or {}) - used[kind]
        assert not unused, f"{kind} defined but in no pipeline: {sorted(unused)}"
    for extension in otel["service"].get("extensions", []) or []:
        assert extension in (otel.get("extensions") or {}), f"extension {extension!r} is not defined"


def test_otel_kafka_exporter_writes_what_semwatch_reads(otel, services):
    topic = Settings().topics.otlp
    traces = [p for pid, p in otel["service"]["pipelines"].items() if _component_type(pid) == "traces"]
    kafka_exporters = [e for p in traces for e in p["exporters"] if _component_type(e) == "kafka"]
    assert kafka_exporters, "no kafka exporter in a traces pipeline"
    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    listeners = {split_host_port(l.split("://", 1)[1]) for l in advertised.split(",")}
    for exporter_id in kafka_exporters:
        cfg = otel["exporters"][exporter_id]
        assert cfg.get("topic") == topic, f"{exporter_id}: topic {cfg.get('topic')!r}, semwatch reads {topic!r}"
        assert cfg.get("encoding") == "otlp_json", f"{exporter_id}: encoding must be otlp_json"
        assert cfg.get("protocol_version"), f"{exporter_id}: protocol_version is required in 0.114"
        for broker in cfg.get("brokers", []):
            assert split_host_port(broker) in listeners, f"{exporter_id}: broker {broker} is not advertised"
    # The workers read that topic.
    for name, svc in semwatch_services(services).items():
        if as_list(svc.get("command"))[:1] == ["worker"]:
            env = environment(svc)
            assert env.get("SEMWATCH_OTLP_ENABLED", "").lower() == "true", f"{name}: OTLP agent not enabled"
            assert env.get("SEMWATCH_TOPICS__OTLP", topic) == topic


def test_otel_groupbytrace_runs_before_batching(otel):
    """semwatch maps one export at a time: all spans of a trace must reach Kafka in one record."""
    for pipeline_id, pipeline in otel["service"]["pipelines"].items():
        if _component_type(pipeline_id) != "traces":
            continue
        types = [_component_type(p) for p in pipeline.get("processors", [])]
        assert "groupbytrace" in types, f"pipeline {pipeline_id}: add the groupbytrace processor"
        if "batch" in types:
            assert types.index("groupbytrace") < types.index("batch"), \
                f"pipeline {pipeline_id}: batch before groupbytrace splits traces"
        if "memory_limiter" in types:
            assert types[0] == "memory_limiter", "memory_limiter should be the first processor"


def test_otel_receiver_ports_match_the_compose_service(otel, services):
    svc = services["otel-collector"]
    assert svc.get("profiles"), "the collector is optional: give it a profile"
    command = as_list(svc.get("command"))
    config_path = flag_value(command, "--config") or "/etc/otelcol-contrib/config.yaml"
    assert mount_source(svc, config_path) == OTEL_CONFIG.resolve(), \
        f"config/otel-collector.yaml is not mounted at {config_path}"
    protocols = otel["receivers"]["otlp"]["protocols"]
    for proto in ("grpc", "http"):
        endpoint = (protocols.get(proto) or {}).get("endpoint")
        assert endpoint, f"otlp {proto}: set endpoint (defaults to localhost, unreachable in a container)"
        host, port = split_host_port(endpoint)
        assert host in ("0.0.0.0", "::", "[::]", ""), f"otlp {proto} binds {host}: not reachable"
        assert port in container_ports(svc), f"otel-collector does not publish {port}"
