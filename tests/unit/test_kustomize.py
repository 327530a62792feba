"""anklet.dev.kustomize: the Python renderer matches kubectl's kustomize on what manifests/ uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anklet.dev import kustomize

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/production"]
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")


@needs_kubectl
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_python_renderer_equals_kubectl_kustomize(name: str) -> None:
    path = ROOT / "manifests" / name
    ours = kustomize.by_identity(kustomize.render(path, use_kubectl=False))
    theirs = kustomize.by_identity(kustomize.render(path, use_kubectl=True))
    assert ours.keys() == theirs.keys()
    for key, obj in theirs.items():
        assert ours[key] == obj, key


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: anklet
          envFrom: [{configMapRef: {name: cfg}}]
          env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: A}}}]
        - {name: r, image: "registry.local:5000/redis:7"}
      volumes: [{name: v, configMap: {name: cfg}}]
"""


def _overlay(tmp_path: Path, extra: str = "") -> Path:
    _write(
        tmp_path,
        {
            "base/kustomization.yaml": "namespace: ns\nresources: [d.yaml]\n",
            "base/d.yaml": DEPLOYMENT,
            "overlay/kustomization.yaml": (
                "namespace: ns\nresources: [../base]\n"
                "images: [{name: anklet, newName: reg.example/anklet, newTag: '1.2'}]\n"
                "replicas: [{name: d, count: 3}]\n"
                "configMapGenerator: [{name: cfg, envs: [a.env], literals: [Z=1]}]\n" + extra
            ),
            "overlay/a.env": "# comment\n\nA=1\nB=two words\nC=<&>\n",
        },
    )
    return tmp_path / "overlay"


def test_generated_config_map_gets_kustomizes_hash_and_references_follow(tmp_path: Path) -> None:
    objects = kustomize.render_python(_overlay(tmp_path))
    [cm] = [o for o in objects if o["kind"] == "ConfigMap"]
    # The name kubectl kustomize (kustomize v5.5) gives this exact ConfigMap.
    assert cm["metadata"] == {"name": "cfg-5ckm9kkdg6", "namespace": "ns"}
    assert cm["data"] == {"A": "1", "B": "two words", "C": "<&>", "Z": "1"}
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    app, redis = pod["containers"]
    assert app["envFrom"][0]["configMapRef"]["name"] == "cfg-5ckm9kkdg6"
    assert app["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == "cfg-5ckm9kkdg6"
    assert pod["volumes"][0]["configMap"]["name"] == "cfg-5ckm9kkdg6"
    assert app["image"] == "reg.example/anklet:1.2"
    assert redis["image"] == "registry.local:5000/redis:7", "a registry port is not a tag"
    assert deployment["spec"]["replicas"] == 3 and deployment["metadata"]["namespace"] == "ns"


@needs_kubectl
def test_the_small_overlay_renders_like_kubectl(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path)
    ours = kustomize.by_identity(kustomize.render(overlay, use_kubectl=False))
    assert ours == kustomize.by_identity(kustomize.render(overlay, use_kubectl=True))


def test_hash_suffix_can_be_turned_off(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path, "generatorOptions: {disableNameSuffixHash: true}\n")
    names = [o["metadata"]["name"] for o in kustomize.render_python(overlay) if o["kind"] == "ConfigMap"]
    assert names == ["cfg"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param("commonLabels: {a: b}\n", "commonLabels not supported", id="unknown-field"),
        pytest.param("patches: [{path: p.yaml}]\n", "patches not supported", id="patches"),
    ],
)
def test_unsupported_features_are_refused_not_ignored(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(kustomize.UnsupportedKustomization, match=message):
        kustomize.render_python(_overlay(tmp_path, extra))


def test_a_key_without_value_is_refused(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path)
    (overlay / "a.env").write_text("JUST_A_NAME\n")
    with pytest.raises(kustomize.UnsupportedKustomization, match="has no '='"):
        kustomize.render_python(overlay)


def test_subjects_must_name_the_namespace(tmp_path: Path) -> None:
    binding = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: b}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: r}
subjects: [{kind: ServiceAccount, name: sa}]
"""
    _write(tmp_path, {"kustomization.yaml": "namespace: ns\nresources: [b.yaml]\n", "b.yaml": binding})
    with pytest.raises(kustomize.UnsupportedKustomization, match="must name namespace ns"):
        kustomize.render_python(tmp_path)


def test_files_outside_the_root_are_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {"outside.yaml": "kind: ConfigMap\n", "k/kustomization.yaml": "resources: [../outside.yaml]\n"},
    )
    with pytest.raises(kustomize.KustomizeError, match="outside the kustomization root"):
        kustomize.render_python(tmp_path / "k")


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("anklet", ("anklet", "", "")),
        ("anklet:0.1.0", ("anklet", "0.1.0", "")),
        ("reg:5000/a/anklet", ("reg:5000/a/anklet", "", "")),
        ("reg:5000/anklet:1@sha256:ab", ("reg:5000/anklet", "1", "sha256:ab")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str, str]) -> None:
    assert kustomize.split_image(image) == parts
