"""The deployment files: the Dockerfile, the image's configuration, the Kubernetes manifests.

What runs here: every manifest is validated offline against the Kubernetes API's schemas
(``kubernetes-validate``, which ships them; strict: unknown fields are errors); the kustomization
renders with ``kubectl kustomize`` where kubectl is installed; the numbers that must agree across
files agree (probe paths the server answers, the termination grace period above the drain, the
HorizontalPodAutoscaler's metric one the server serves, the user id); the configurations load
with the engine's own loader. The image itself is not built here (no registry to pull the base
image from): the Dockerfile's structure is checked instead.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from scaivoice.engine._host.config import config_from_mapping
from scaivoice.engine._server.workers import _DRAIN_MARGIN_S

from .test_server import running_server

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are checked against (autoscaling/v2, policy/v1)."""


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> dict[str, dict[str, Any]]:
    """Every resource of deploy/kubernetes, by ``kind/name``."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in _documents(path):
            if doc["kind"] != "Kustomization":
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def _container() -> dict[str, Any]:
    deployment = _manifests()["Deployment/scaivoice"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _engine_config_of_configmap() -> dict[str, Any]:
    data = _manifests()["ConfigMap/scaivoice-config"]["data"]["scaivoice.toml"]
    return tomllib.loads(data)


@pytest.mark.parametrize("path", sorted(KUBE.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in _documents(path):
        if doc["kind"] == "Kustomization":
            listed = {*doc["resources"]}
            assert listed <= {p.name for p in KUBE.glob("*.yaml")}
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_kustomization_renders_offline() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    expected = ["ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"]
    assert kinds == sorted([*expected, "PodDisruptionBudget"])


def test_the_configurations_load_with_the_engines_loader() -> None:
    config = config_from_mapping(_engine_config_of_configmap())
    assert config.auth.keys_file == "/etc/scaivoice/keys/keys.json"
    assert not config.open_mode  # keys from the mounted Secret: it listens on 0.0.0.0
    image = config_from_mapping(tomllib.loads((ROOT / "deploy/docker/scaivoice.toml").read_text()))
    assert not image.open_mode and image.backends.stt == "whisper"


async def test_the_probes_are_paths_the_server_answers() -> None:
    container = _container()
    paths = {
        container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {"/livez", "/readyz"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    async with running_server() as (server, _), httpx.AsyncClient(base_url=server.url) as http:
        for path in paths:
            assert (await http.get(path)).status_code == 200, path


def test_termination_waits_for_the_drain() -> None:
    spec = _manifests()["Deployment/scaivoice"]["spec"]["template"]["spec"]
    container = _container()
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = config_from_mapping(_engine_config_of_configmap()).server.drain_timeout_s
    assert spec["terminationGracePeriodSeconds"] > pause + drain + _DRAIN_MARGIN_S


def test_workers_resources_and_user_agree() -> None:
    container = _container()
    workers = int(container["args"][container["args"].index("--workers") + 1])
    assert float(container["resources"]["requests"]["cpu"]) == workers  # a worker per core
    pod = _manifests()["Deployment/scaivoice"]["spec"]["template"]["spec"]
    user = _dockerfile_user()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the workers' metrics files


def test_the_service_and_the_autoscaler_find_the_pods_and_a_served_metric() -> None:
    manifests = _manifests()
    labels = manifests["Deployment/scaivoice"]["spec"]["template"]["metadata"]["labels"]
    service = manifests["Service/scaivoice"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] in {p["name"] for p in _container()["ports"]}
    hpa = manifests["HorizontalPodAutoscaler/scaivoice"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "scaivoice"
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    adapter = yaml.safe_load(manifests["ConfigMap/adapter-config"]["data"]["config.yaml"])
    assert adapter["rules"][0]["name"]["as"] == metric
    assert metric in (ROOT / "docs" / "operator-guide.md").read_text()
    from scaivoice.engine._host.telemetry import Telemetry

    assert metric in Telemetry().prometheus().decode()


# ---------------------------------------------------------------------- the Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions: (KEYWORD, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _dockerfile_user() -> str:
    users = [rest for keyword, rest in _instructions() if keyword == "USER"]
    return users[-1]


def test_the_image_runs_as_a_non_root_user() -> None:
    user = _dockerfile_user()
    assert user.split(":")[0] not in ("0", "root")
    final_stage = _instructions()[
        max(i for i, (k, _) in enumerate(_instructions()) if k == "FROM") :
    ]
    assert any(k == "USER" for k, _ in final_stage)


def test_the_image_checks_readiness_and_serves() -> None:
    instructions = dict(_instructions())
    assert "/readyz" in instructions["HEALTHCHECK"]
    assert "8765" in instructions["EXPOSE"]
    assert instructions["ENTRYPOINT"] == '["scaivoice", "serve"]'


def test_the_image_installs_from_the_project_with_the_pins_and_fetches_no_models() -> None:
    instructions = _instructions()
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install .*-c constraints\.txt", runs)
    assert "--no-index --find-links /wheels" in runs  # offline with deploy/wheels filled
    for fetcher in ("curl", "wget", "http://", "https://", "huggingface", "hf_hub", "snapshot_"):
        assert fetcher not in runs, fetcher
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for keyword, rest in instructions:
        if keyword != "COPY" or rest.startswith("--from="):
            continue
        *sources, _target = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_the_model_join_at_build_time_names_what_exists() -> None:
    from scaivoice.backends import _llm_models, _model_parts

    runs = " ".join(rest for keyword, rest in _instructions() if keyword == "RUN")
    for module, name in re.findall(r"from scaivoice\.backends\.(\w+) import ([\w, ]+);", runs):
        for attribute in name.split(","):
            target = {"_llm_models": _llm_models, "_model_parts": _model_parts}[module]
            assert hasattr(target, attribute.strip()), (module, attribute)
