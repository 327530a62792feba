"""manifests/: every overlay renders, validates against Kubernetes' schemas, and holds its promises.

Rendering uses `kubectl kustomize` when kubectl is installed, else `anklet.dev.kustomize`'s Python
renderer (tests/unit/test_kustomize.py keeps the two identical). Validation uses the schemas
that `kubernetes-validate` ships (offline), strict: an unknown field is an error, as a typo in a
probe or a securityContext would otherwise be silently dropped by the API server.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from anklet import crd
from anklet.config import ControllerSettings
from anklet.dev import kustomize
from plugins.handlers.github.handler import GitHubHandlerSettings
from plugins.handlers.github.settings import GitHubSettings
from plugins.receivers.github.config import ReceiverSettings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["overlays/dev", "overlays/production"]
KUSTOMIZATIONS = ["base", *OVERLAYS]
NAMESPACE = "anklet-system"
# The oldest Kubernetes we claim (all APIs used are GA there) and the newest schemas shipped.
KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.utils.latest_version()]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# Variables the manifests set that are not ANKLET_* settings, and who reads them.
OTHER_ENV = {
    "POD_NAME": "leader election identity (anklet/config.py)",
    "POD_NAMESPACE": "the Lease's namespace (anklet/config.py)",
    "LOG_LEVEL": "anklet's log level (anklet/cli.py)",
    "REDIS_PASSWORD": "dev Redis: written into its config file",
    "REDISCLI_AUTH": "dev Redis: the probes' redis-cli",
}


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize.render(MANIFESTS / name))


def objects(name: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in rendered(name) if kind is None or o["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> dict[str, Any]:
    [found] = [o for o in objects(name, kind) if o["metadata"]["name"] == object_name]
    return found


def pod_specs(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in rendered(name):
        if obj["kind"] in WORKLOAD_KINDS:
            yield obj, obj["spec"]["template"]["spec"]


def containers(name: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    for obj, pod in pod_specs(name):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield obj["metadata"]["name"], pod, container


def ids(entries: list[str]) -> list[str]:
    return [e.replace("overlays/", "") for e in entries]


# ----- rendering and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS, ids=ids(KUSTOMIZATIONS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(name: str, version: str) -> None:
    problems = []
    for obj in rendered(name):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj['apiVersion']} in Kubernetes {version}")
    assert not problems, "\n".join(problems)


def test_the_validator_catches_a_typo() -> None:
    deployment = dict(one("overlays/production", "Deployment", "anklet-controller"))
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS, ids=ids(KUSTOMIZATIONS))
def test_everything_namespaced_lives_in_anklet_system(name: str) -> None:
    for obj in rendered(name):
        if obj["kind"] in kustomize.CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], obj["metadata"]
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, (obj["kind"], obj["metadata"])
    assert [n["metadata"]["name"] for n in objects(name, "Namespace")] == [NAMESPACE]


# ----- the CRDs ----------------------------------------------------------------------------------


def test_manifest_crds_are_copies_of_crds_dir() -> None:
    for source in (ROOT / "crds").glob("*.yaml"):
        copy = MANIFESTS / "base" / "crds" / source.name
        assert copy.read_text() == source.read_text(), f"{copy} differs from {source}: run `make crds`"
    assert {p.name for p in (MANIFESTS / "base" / "crds").glob("*.yaml")} == {
        p.name for p in (ROOT / "crds").glob("*.yaml")
    }


def test_the_drift_check_covers_the_copies() -> None:
    generated = crd.files()
    copies = [path for path in generated if path.is_relative_to(MANIFESTS)]
    assert sorted(p.name for p in copies) == ["ankahost.yaml", "ankajob.yaml"]
    for path in copies:
        assert generated[path] == generated[crd.CRD_DIR / path.name]


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_each_overlay_installs_the_generated_crds(name: str) -> None:
    installed = {o["metadata"]["name"]: o for o in objects(name, "CustomResourceDefinition")}
    expected = {c["metadata"]["name"]: c for c in crd.all_crds()}
    assert installed == expected


# ----- containers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_every_container_has_probes_resources_and_a_locked_down_context(name: str) -> None:
    seen = []
    for workload, pod, container in containers(name):
        where = f"{workload}/{container['name']}"
        seen.append(where)
        assert "livenessProbe" in container and "readinessProbe" in container, where
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][section]), f"{where}: {section}"
        ctx, pod_ctx = container.get("securityContext", {}), pod.get("securityContext", {})
        assert ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot"), f"{where}: runAsNonRoot"
        assert pod_ctx.get("runAsUser", ctx.get("runAsUser", 0)) != 0, f"{where}: uid 0"
        assert ctx.get("readOnlyRootFilesystem") is True, f"{where}: writable root filesystem"
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities"
        seccomp = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}
        assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp"
    assert {"anklet-controller/controller", "anklet-receiver/receiver"} <= set(seen)


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_http_probes_use_declared_ports(name: str) -> None:
    for workload, _, container in containers(name):
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = container.get(probe, {}).get("httpGet")
            if http is None:
                continue
            assert http["path"] == "/healthz", f"{workload}: {probe}"
            assert http["port"] in ports or http["port"] in ports.values(), f"{workload}: {probe}"


def test_the_controller_serves_its_probe_where_the_probe_looks() -> None:
    container = one("overlays/production", "Deployment", "anklet-controller")["spec"]["template"]["spec"][
        "containers"
    ][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["args"] == ["controller", "--liveness", f"http://0.0.0.0:{ports['health']}/healthz"]
    assert ports["metrics"] == ControllerSettings.model_fields["metrics_port"].default


def test_the_receiver_listens_where_its_probe_and_service_look() -> None:
    deployment = one("overlays/production", "Deployment", "anklet-receiver")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    port = int(env["ANKLET_RECEIVER_PORT"]["value"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    service = one("overlays/production", "Service", "anklet-receiver")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    namespace_ref = env["ANKLET_RECEIVER_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert namespace_ref == "metadata.namespace"


# ----- images ------------------------------------------------------------------------------------


def _version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_images_are_pinned_and_anklet_by_the_overlay(name: str) -> None:
    overlay = kustomize._load_kustomization(MANIFESTS / name)
    [entry] = [i for i in overlay["images"] if i["name"] == "anklet"]
    assert entry["newTag"] == _version(), "the overlay's tag follows the package version"
    anklet_images = 0
    for workload, _, container in containers(name):
        image_name, tag, digest = kustomize.split_image(container["image"])
        assert digest or (tag and tag != "latest"), f"{workload}: {container['image']} is not pinned"
        if image_name == entry.get("newName", "anklet"):
            assert tag == entry["newTag"], f"{workload}: {container['image']}"
            anklet_images += 1
    assert anklet_images == 2


def test_the_base_leaves_the_tag_to_the_overlays() -> None:
    for workload, _, container in containers("base"):
        assert container["image"] == "anklet", workload


# ----- secrets and settings ----------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS, ids=ids(KUSTOMIZATIONS))
def test_no_secret_is_embedded(name: str) -> None:
    for obj in objects(name, "Secret"):
        assert not obj.get("data") and not obj.get("stringData"), obj["metadata"]["name"]


def secret_refs(name: str) -> set[tuple[str, str, bool]]:
    refs = set()
    for _, _, container in containers(name):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"], bool(ref.get("optional"))))
    return refs


def test_production_needs_exactly_the_documented_secrets() -> None:
    assert secret_refs("overlays/production") == {
        ("anklet-redis", "url", False),
        ("anklet-github", "webhook-secret", False),
        ("anklet-github", "token", True),
        ("anklet-github", "app-private-key", True),
    }
    assert secret_refs("overlays/dev") == secret_refs("overlays/production") | {
        ("anklet-redis", "password", False)
    }


def test_the_readme_documents_every_secret_key() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install on a cluster") :]
    section = section[: section.find("\n## ", 3)]
    for overlay in OVERLAYS:
        for secret, key, _ in secret_refs(overlay):
            assert secret in section and key in section, (
                f"{secret}/{key} is not in the README's install section"
            )


def _settings_env(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str) and c.isupper()}
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


KNOWN_ENV = set().union(
    *(
        _settings_env(cls)
        for cls in (ControllerSettings, ReceiverSettings, GitHubSettings, GitHubHandlerSettings)
    )
)


def _env_files(name: str) -> Iterator[tuple[Path, str]]:
    """Keys of the overlay's env files, including commented-out examples (`# KEY=value`)."""
    for path in sorted((MANIFESTS / name).glob("*.env")):
        for line in path.read_text().splitlines():
            match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
            if match:
                yield path, match.group(1)


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_every_variable_is_one_the_code_reads(name: str) -> None:
    used = [(f"{w}/{c['name']}", e["name"]) for w, _, c in containers(name) for e in c.get("env", [])]
    used += [(path.name, key) for path, key in _env_files(name)]
    unknown = sorted({(where, var) for where, var in used if var not in KNOWN_ENV and var not in OTHER_ENV})
    assert not unknown, f"no setting reads these: {unknown}"
    assert (
        len(KNOWN_ENV) > 30
        and "ANKLET_REDIS_URL" in KNOWN_ENV
        and "ANKLET_GITHUB_WEBHOOK_SECRET" in KNOWN_ENV
    )


# ----- the controller: HA and RBAC ---------------------------------------------------------------


def test_the_controller_runs_two_replicas_with_leader_election() -> None:
    deployment = one("overlays/production", "Deployment", "anklet-controller")
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ANKLET_LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert ControllerSettings.model_fields["leader_election_lease_name"].default == "anklet-controller"


def test_the_lease_is_granted_in_the_controllers_namespace_only() -> None:
    role = one("overlays/production", "Role", "anklet-controller-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    granted = {
        (verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        if rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
        for verb in rule["verbs"]
    }
    assert granted == {("get", ("anklet-controller",)), ("update", ("anklet-controller",)), ("create", ())}
    binding = one("overlays/production", "RoleBinding", "anklet-controller-leader-election")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "anklet-controller", "namespace": NAMESPACE}
    ]


def test_the_receiver_has_no_cluster_wide_rights() -> None:
    for binding in objects("overlays/production", "ClusterRoleBinding"):
        assert all(s["name"] != "anklet-receiver" for s in binding["subjects"]), binding["metadata"]["name"]


# ----- availability and network ------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_each_deployment_has_a_disruption_budget(name: str) -> None:
    budgets = [p["spec"]["selector"]["matchLabels"] for p in objects(name, "PodDisruptionBudget")]
    for deployment in objects(name, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(sel.items() <= labels.items() for sel in budgets), deployment["metadata"]["name"]


def _policy(name: str, component: str) -> dict[str, Any]:
    [policy] = [
        p
        for p in objects(name, "NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == component
    ]
    return policy


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


@pytest.mark.parametrize("name", OVERLAYS, ids=ids(OVERLAYS))
def test_network_policies_open_only_what_is_needed(name: str) -> None:
    receiver, controller = _policy(name, "receiver"), _policy(name, "controller")
    assert _ports(receiver["spec"]["ingress"]) == {8080}
    assert _ports(controller["spec"]["ingress"]) == {8080, 9090}, "probes and metrics"
    assert {443, 6443, 6379, 53} <= _ports(controller["spec"]["egress"])
    assert 6379 not in _ports(receiver["spec"]["egress"]), "the receiver never talks to Redis"
    for policy in (receiver, controller):
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_production_scales_the_receiver_behind_an_ingress() -> None:
    hpa = one("overlays/production", "HorizontalPodAutoscaler", "anklet-receiver")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "anklet-receiver",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    receiver = one("overlays/production", "Deployment", "anklet-receiver")
    assert "replicas" not in receiver["spec"], "kubectl apply would fight the autoscaler"
    ingress = one("overlays/production", "Ingress", "anklet-receiver")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {p["path"] for p in paths} == {"/webhooks/github", "/jobs/v1/receiver"}, "no /metrics outside"
    assert all(
        p["backend"]["service"] == {"name": "anklet-receiver", "port": {"name": "http"}} for p in paths
    )
    assert not objects("overlays/production", "StatefulSet"), "production uses an external Redis"


def test_dev_runs_redis_with_aof_a_volume_and_a_secret_password() -> None:
    redis = one("overlays/dev", "StatefulSet", "anklet-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    command = " ".join([*container["command"], *container["args"]])
    assert "--appendonly yes" in command and "--dir /data" in command
    assert "$(REDIS_PASSWORD)" not in command, "the password must not reach a command line"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "anklet-redis", "key": "password"}
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert one("overlays/dev", "Deployment", "anklet-receiver")["spec"]["replicas"] == 1
