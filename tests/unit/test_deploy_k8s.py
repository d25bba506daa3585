"""deploy/k8s: every manifest validated against the Kubernetes OpenAPI schemas that the
kubernetes-validate package bundles (offline: the unit tier blocks sockets), then the checks an
operator would make by eye: probes, resources, non-root, selectors, the HPA target, replicas."""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline import settings as settings_mod
from pipeline import tenants

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
# The oldest Kubernetes minor still commonly run, and the newest the package knows.
VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
SETTING_NAMES = {settings_mod.PREFIX + f.name.upper() for f in dataclasses.fields(settings_mod.Settings)}


@dataclasses.dataclass(frozen=True)
class Manifest:
    file: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def load_manifests() -> list[Manifest]:
    result: list[Manifest] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        result.extend(Manifest(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return result


MANIFESTS = load_manifests()


def find(kind: str, name: str) -> dict[str, Any]:
    found = [m.doc for m in MANIFESTS if m.kind == kind and m.name == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def deployments() -> list[dict[str, Any]]:
    return [m.doc for m in MANIFESTS if m.kind == "Deployment"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for d in deployments():
        for c in d["spec"]["template"]["spec"]["containers"]:
            yield d["metadata"]["name"], c


def config_data() -> dict[str, str]:
    data: dict[str, str] = find("ConfigMap", "eventpipe-config")["data"]
    return data


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The variables a deployment's first container gets from ConfigMaps, Secrets and `env`."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(find("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


CONTAINERS = [pytest.param(name, c, id=name) for name, c in containers()]


# -- schema validation -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_name_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conftest blocks connects; a schema fetch would first resolve a name: block that too, so a
    validator that reached for the network fails here instead of passing on a machine that is online."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"network lookup during a deploy test: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: f"{m.file}:{m.kind}/{m.name}")
def test_manifest_matches_the_kubernetes_schema(manifest: Manifest, version: str) -> None:
    # strict: unknown fields (a misspelt `readinesProbe`) are errors, as the API server's field
    # validation makes them.
    kubernetes_validate.validate(manifest.doc, version, strict=True)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d["spec"].update(replicas="three"), id="wrong-type"),
        pytest.param(lambda d: d["spec"]["template"]["spec"].update(containerz=[]), id="unknown-field"),
        pytest.param(lambda d: d["spec"].pop("selector"), id="missing-required"),
    ],
)
def test_the_validator_really_validates(mutate: Any) -> None:
    """Guards against a validator that silently passes everything (a missing schema, a wrong kind)."""
    doc = yaml.safe_load((K8S / "consumer-deployment.yaml").read_text())
    mutate(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {m.file for m in MANIFESTS}
    assert kustomization["namespace"] == find("Namespace", kustomization["namespace"])["metadata"]["name"]
    images = {i["name"] for i in kustomization["images"]}
    assert {c["image"].split(":")[0] for _, c in containers()} <= images


def test_names_are_unique_per_kind() -> None:
    keys = [(m.kind, m.name) for m in MANIFESTS]
    assert len(keys) == len(set(keys))


# -- workloads -------------------------------------------------------------------------------------


def test_consumer_replicas_stay_within_the_partitions() -> None:
    consumer = find("Deployment", "eventpipe-consumer")
    partitions = int(config_data()["EVENTPIPE_RAW_PARTITIONS"])
    assert partitions == settings_mod.Settings().raw_partitions == 12
    assert 1 <= consumer["spec"]["replicas"] <= partitions
    surge = consumer["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert consumer["spec"]["replicas"] + int(surge) <= partitions + 1
    text = (K8S / "consumer-deployment.yaml").read_text()
    assert "replicas <= 12" in text and "partition" in text, "the bound is explained where it is set"


def test_roles_and_one_image() -> None:
    args = {name: c["args"][0] for name, c in containers()}
    assert args == {"eventpipe-receiver": "receiver", "eventpipe-consumer": "consumer"}
    assert len({c["image"] for _, c in containers()}) == 1


@pytest.mark.parametrize(("deployment", "container"), CONTAINERS)
def test_probes_point_at_healthz_and_readyz(deployment: str, container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ]:
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{deployment} {probe}"
        assert get["port"] in ports, f"{deployment} {probe} names an unknown port"


def test_probe_ports_are_the_configured_ports() -> None:
    config = config_data()
    for name, setting in [
        ("eventpipe-receiver", "EVENTPIPE_HTTP_PORT"),
        ("eventpipe-consumer", "EVENTPIPE_METRICS_PORT"),
    ]:
        (container,) = find("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert [p["containerPort"] for p in container["ports"]] == [int(config[setting])]


@pytest.mark.parametrize(("deployment", "container"), CONTAINERS)
def test_resources_have_requests_and_limits(deployment: str, container: dict[str, Any]) -> None:
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"{deployment} {section}"


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_pods_run_unprivileged_on_a_read_only_root(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False, "eventpipe never talks to the API server"
    writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in writable, "a read-only root still needs a writable /tmp"
    assert container_env(deployment)["EVENTPIPE_DATA_DIR"].startswith("/tmp/")


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_prometheus_scrape_annotations(deployment: dict[str, Any]) -> None:
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = [p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]]
    assert int(annotations["prometheus.io/port"]) in ports


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_selector_matches_the_pod_labels(deployment: dict[str, Any]) -> None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_each_deployment_has_a_disruption_budget() -> None:
    budgets = [m.doc for m in MANIFESTS if m.kind == "PodDisruptionBudget"]
    for deployment in deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{deployment['metadata']['name']}: {len(covering)} budgets"


def test_hpa_scales_the_receiver_deployment_on_cpu() -> None:
    (hpa,) = [m.doc for m in MANIFESTS if m.kind == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "eventpipe-receiver",
    )
    find("Deployment", target["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    receiver = find("Deployment", "eventpipe-receiver")
    assert "replicas" not in receiver["spec"], "the HPA owns the replica count"
    (container,) = receiver["spec"]["template"]["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"], "CPU utilisation is relative to the request"


def test_service_routes_to_the_receiver_port() -> None:
    service = find("Service", "eventpipe-receiver")
    receiver = find("Deployment", "eventpipe-receiver")
    assert service["spec"]["selector"].items() <= receiver["spec"]["template"]["metadata"]["labels"].items()
    (container,) = receiver["spec"]["template"]["spec"]["containers"]
    names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in names for p in service["spec"]["ports"])


def test_receiver_drains_within_the_grace_period() -> None:
    receiver = find("Deployment", "eventpipe-receiver")
    pod = receiver["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(container_env(receiver)["EVENTPIPE_DRAIN_SECONDS"])
    assert pause + drain < pod["terminationGracePeriodSeconds"]


# -- configuration ---------------------------------------------------------------------------------


def test_configmap_holds_only_eventpipe_settings_that_load() -> None:
    data = config_data()
    assert set(data) <= SETTING_NAMES, f"unknown settings: {set(data) - SETTING_NAMES}"
    assert "EVENTPIPE_SINK" not in data, "the sink DSN carries a password: it belongs in a Secret"
    for deployment in deployments():
        settings = settings_mod.load(container_env(deployment))
        assert settings.http_host == "0.0.0.0"


def test_every_referenced_configmap_and_secret_exists() -> None:
    for deployment in deployments():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                kind, ref = (
                    ("ConfigMap", "configMapRef") if "configMapRef" in source else ("Secret", "secretRef")
                )
                find(kind, source[ref]["name"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                find("Secret", volume["secret"]["secretName"])


def test_consumer_gets_the_sink_and_the_receiver_does_not() -> None:
    consumer = settings_mod.load(container_env(find("Deployment", "eventpipe-consumer")))
    assert consumer.sink.startswith("postgresql://")
    assert "EVENTPIPE_SINK" not in container_env(find("Deployment", "eventpipe-receiver"))


def test_tenants_secret_parses_and_its_jwt_secrets_reach_the_receiver() -> None:
    receiver = find("Deployment", "eventpipe-receiver")
    env = container_env(receiver)
    pod = receiver["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(
        m for m in container["volumeMounts"] if env["EVENTPIPE_TENANTS"].startswith(m["mountPath"] + "/")
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = find("Secret", volume["secret"]["secretName"])
    key = env["EVENTPIPE_TENANTS"].removeprefix(mount["mountPath"] + "/")
    text = secret["stringData"][key]
    directory = tenants.parse(text, env)
    assert directory.by_id("demo") is not None
    wanted = {
        s.removeprefix("env:")
        for tenant in tomllib.loads(text)["tenants"]
        for s in tenant.get("jwt_secrets", [])
        if s.startswith("env:")
    }
    assert wanted <= set(env), f"the receiver lacks {wanted - set(env)}"
    assert volume["secret"]["defaultMode"] & 0o007 == 0, "not world-readable"
