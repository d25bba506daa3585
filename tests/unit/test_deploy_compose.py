"""docker-compose.yml, the Dockerfile and .dockerignore, checked by parsing: no Docker engine needed."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import settings as settings_mod
from pipeline import tenants

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

STACK = ("kafka", "postgres", "init", "receiver", "consumer", "prometheus", "grafana")
ONE_SHOT = {"init"}
SETTING_NAMES = {settings_mod.PREFIX + f.name.upper() for f in dataclasses.fields(settings_mod.Settings)}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: what a user gets without a .env file."""
    return _VARIABLE.sub(lambda m: m.group("default") or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def eventpipe_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the image built from this repository's Dockerfile."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host part, container port) of each `ports:` entry, short or long form."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((str(entry.get("published", "")), int(entry["target"])))
            continue
        host, _, container = interpolate(str(entry)).rpartition(":")
        result.append((host, int(container.split("/")[0])))
    return result


def healthcheck_script(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def python_snippet(test: list[str]) -> str:
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


# -- the services ----------------------------------------------------------------------------------


def test_the_whole_stack_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(STACK) <= set(services), f"missing: {set(STACK) - set(services)}"


def test_eventpipe_services_share_one_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    ours = eventpipe_services(services)
    assert set(ours) == {"init", "receiver", "consumer"}
    assert len({svc["image"] for svc in ours.values()}) == 1, "build once, one image tag for all"
    for svc in ours.values():
        context = svc["build"]["context"] if isinstance(svc["build"], dict) else svc["build"]
        assert (ROOT / context / "Dockerfile").is_file()


def test_kafka_is_the_official_image_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"], "KRaft storage is formatted with CLUSTER_ID"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    # a single node cannot keep three replicas of the internal topics
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_kafka_advertises_the_address_the_eventpipe_services_use(
    services: dict[str, dict[str, Any]],
) -> None:
    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {item.split("://", 1)[1] for item in advertised.split(",")}
    for name, svc in eventpipe_services(services).items():
        bootstrap = environment(svc)["EVENTPIPE_KAFKA_BOOTSTRAP"]
        assert bootstrap in addresses, f"{name} bootstraps from {bootstrap}, kafka advertises {addresses}"
        assert bootstrap.split(":")[0] in services, "reachable by its service name"


@pytest.mark.parametrize("name", [s for s in STACK if s not in ONE_SHOT])
def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name].get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert not check.get("disable"), f"{name} disables its healthcheck"
    assert check["test"][0] in ("CMD", "CMD-SHELL"), check["test"]
    assert services[name].get("restart") in ("unless-stopped", "always", "on-failure")


def test_postgres_healthcheck_uses_pg_isready(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in healthcheck_script(services["postgres"])


def test_kafka_healthcheck_asks_the_broker(services: dict[str, dict[str, Any]]) -> None:
    assert "--bootstrap-server localhost:9092" in healthcheck_script(services["kafka"])


def test_consumer_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose up --scale consumer=4` needs replicas that do not clash on a name or a host
    port."""
    consumer = services["consumer"]
    assert "container_name" not in consumer
    assert "hostname" not in consumer
    assert not consumer.get("ports"), "a host port can be bound by one replica only"
    assert consumer["command"] == ["consumer"]


def test_consumer_healthcheck_is_its_readyz(services: dict[str, dict[str, Any]]) -> None:
    consumer = services["consumer"]
    port = environment(consumer)["EVENTPIPE_METRICS_PORT"]
    snippet = python_snippet(consumer["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in snippet
    compile(snippet, "consumer healthcheck", "exec")


def test_receiver_publishes_8080_and_checks_readyz(services: dict[str, dict[str, Any]]) -> None:
    receiver = services["receiver"]
    assert ("8080", 8080) in [(host.rpartition(":")[2], port) for host, port in published_ports(receiver)]
    env = environment(receiver)
    assert env["EVENTPIPE_HTTP_HOST"] == "0.0.0.0"
    assert env["EVENTPIPE_HTTP_PORT"] == "8080"
    command = [interpolate(str(part)) for part in receiver["command"]]
    assert command[0] == "receiver"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    snippet = python_snippet(receiver["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/readyz" in snippet
    compile(snippet, "receiver healthcheck", "exec")


def test_only_the_receiver_listens_on_every_interface(services: dict[str, dict[str, Any]]) -> None:
    """Prometheus, Grafana (admin login) and Kafka's host listener stay on the loopback."""
    for name, svc in services.items():
        for host, _ in published_ports(svc):
            if name != "receiver":
                assert host.startswith("127.0.0.1:"), f"{name} publishes on every interface"


def test_init_ensures_topics_then_migrates_once(services: dict[str, dict[str, Any]]) -> None:
    init = services["init"]
    assert init["restart"] == "no"
    script = " ".join([*init.get("entrypoint", []), *init["command"]])
    steps = [shlex.split(step) for step in script.split("-c", 1)[1].split("&&")]
    assert steps == [["eventpipe", "topics", "ensure"], ["eventpipe", "migrate"]]
    assert init.get("healthcheck", {}).get("disable") is True, "a one-shot has nothing to check"
    assert init["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        pytest.param("receiver", {"init": "service_completed_successfully", "kafka": "service_healthy"}),
        pytest.param(
            "consumer",
            {
                "init": "service_completed_successfully",
                "kafka": "service_healthy",
                "postgres": "service_healthy",
            },
        ),
        pytest.param("grafana", {"prometheus": "service_healthy"}),
    ],
)
def test_depends_on_conditions(services: dict[str, dict[str, Any]], name: str, needs: dict[str, str]) -> None:
    depends = services[name]["depends_on"]
    assert {dep: spec["condition"] for dep, spec in depends.items()} == needs


def test_every_healthy_condition_has_a_healthcheck_to_wait_for(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy"
            if spec["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{name} waits for long-running {dep} to exit"


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["init", "receiver", "consumer"])
def test_eventpipe_environment_is_valid_settings(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    unknown = {k for k in env if k.startswith(settings_mod.PREFIX)} - SETTING_NAMES
    assert not unknown, f"{name}: not eventpipe settings (typo?): {unknown}"
    settings = settings_mod.load(env)
    assert settings.sink.startswith("postgresql://")
    assert "@postgres:5432/" in settings.sink
    assert settings.raw_partitions == 12


def test_the_sink_credentials_match_postgres(services: dict[str, dict[str, Any]]) -> None:
    pg = environment(services["postgres"])
    sink = environment(services["consumer"])["EVENTPIPE_SINK"]
    user_password = f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@"
    assert sink.startswith(f"postgresql://{user_password}")
    assert sink.endswith("/" + pg["POSTGRES_DB"])


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path, for the `./host:/container[:ro]` entries."""
    result = {}
    for entry in service.get("volumes") or []:
        parts = interpolate(str(entry)).split(":")
        if parts[0].startswith(("./", "/")):
            result[parts[1]] = parts[0]
    return result


def test_receiver_gets_a_tenants_file_that_parses(services: dict[str, dict[str, Any]]) -> None:
    receiver = services["receiver"]
    env = environment(receiver)
    host_file = bind_mounts(receiver)[env["EVENTPIPE_TENANTS"]]
    directory = tenants.parse((ROOT / host_file).read_text(), env)
    assert directory.by_id("demo") is not None


def test_every_bind_mount_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for host in bind_mounts(svc).values():
            assert (ROOT / host).exists(), f"{name} mounts missing {host}"


def test_prometheus_and_grafana_mount_deploy(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert bind_mounts(prometheus)["/etc/prometheus"] == "./deploy/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert ("127.0.0.1:9090", 9090) in published_ports(prometheus)
    grafana = services["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    dashboards = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/eventpipe.yml").read_text())
    dashboard_dir = dashboards["providers"][0]["options"]["path"]
    assert mounts[dashboard_dir] == "./deploy/grafana/dashboards"
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer", "anonymous visitors may look, not edit"
    assert "GF_SECURITY_ADMIN_PASSWORD" in env
    assert ("127.0.0.1:3000", 3000) in published_ports(grafana)


def test_state_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    for name, path in [
        ("kafka", "/var/lib/kafka/data"),
        ("postgres", "/var/lib/postgresql/data"),
        ("prometheus", "/prometheus"),
    ]:
        named = {
            str(v).split(":")[1]: str(v).split(":")[0]
            for v in services[name]["volumes"]
            if not str(v).startswith((".", "/"))
        }
        assert path in named, f"{name} keeps {path} in a named volume"
        assert named[path] in declared


# -- Dockerfile ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (no heredocs are used)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [n for n, i in enumerate(instructions) if i.keyword == "FROM"]
    return instructions[starts[-1] :]


def resolve_args(instructions: list[Instruction], text: str) -> str:
    defaults = dict(i.args.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.args)
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], text)


def test_dockerfile_is_multi_stage_on_slim_python_311(dockerfile: list[Instruction]) -> None:
    stages = [i for i in dockerfile if i.keyword == "FROM"]
    assert len(stages) >= 2, "build the wheel in one stage, run it in another"
    for stage in stages:
        image = resolve_args(dockerfile, stage.args.split()[0])
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    final = final_stage(dockerfile)
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert any(c.startswith("--from=build") and "/opt/venv" in c for c in copies), copies
    build_steps = " ".join(i.args for i in dockerfile[: dockerfile.index(final[0])] if i.keyword == "RUN")
    assert "pip wheel" in build_steps and "python -m venv /opt/venv" in build_steps


def test_dockerfile_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    user = last(final_stage(dockerfile), "USER").args
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    assert name.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"


def test_dockerfile_healthcheck_uses_the_python_stdlib(dockerfile: list[Instruction]) -> None:
    check = last(final_stage(dockerfile), "HEALTHCHECK").args
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "slim images have no curl or wget"
    assert "/healthz" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")


def test_dockerfile_entrypoint_and_default_command(dockerfile: list[Instruction]) -> None:
    final = final_stage(dockerfile)
    assert json.loads(last(final, "ENTRYPOINT").args) == ["eventpipe"]
    assert json.loads(last(final, "CMD").args) == ["receiver", "--host", "0.0.0.0"]
    exposed = {port for i in final if i.keyword == "EXPOSE" for port in i.args.split()}
    assert {"8080", "9400"} <= exposed


def test_dockerfile_default_ports_match_the_settings(dockerfile: list[Instruction]) -> None:
    defaults = settings_mod.Settings()
    exposed = {port for i in dockerfile if i.keyword == "EXPOSE" for port in i.args.split()}
    assert {str(defaults.http_port), str(defaults.metrics_port)} <= exposed


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule, enough for these patterns: the last matching pattern wins, a pattern matches a
    path or any of its parent directories, and `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(c, glob) or fnmatch.fnmatchcase(c.split("/")[-1], glob) for c in candidates
        ):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_build_copies(dockerfile: list[Instruction]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source.rstrip("/")
        for i in dockerfile
        if i.keyword == "COPY" and not i.args.startswith("--from")
        for source in i.args.split()[:-1]
    ]
    assert copied, "the build copies from the context"
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(patterns, source), f".dockerignore drops {source}"
        if (ROOT / source).is_dir():
            assert not dockerignore_excludes(patterns, f"{source}/module.py"), (
                f".dockerignore drops {source}/"
            )
    for local_state in (
        ".git",
        ".venv",
        ".eventpipe/kafka",
        "tests/unit",
        "bench",
        "pipeline/__pycache__/a.pyc",
    ):
        assert dockerignore_excludes(patterns, local_state), f"{local_state} would reach the build context"
