"""deploy/k8s/ against the Kubernetes schemas (bundled: no network), and the deployment files
against each other and against impetus: ports, paths, probes, users, limits and setting names."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from impetus.config import Settings, env_name

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
DEPLOYMENTS = ["deployment.yaml", "deployment-gpu.yaml"]
# variables read by deploy/docker/entrypoint.sh itself, not by impetus's settings
ENTRYPOINT_VARS = {"IMPETUS_API_KEY_FILE"}


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "k8s" / name).read_text())


def dockerfile_env(name: str) -> dict[str, str]:
    text = (DEPLOY / "docker" / name).read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", text, flags=re.MULTILINE):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def known_variable(name: str) -> bool:
    settings = {env_name(f) for f in Settings.model_fields}
    return name in settings or name in ENTRYPOINT_VARS or name == "IMPETUS_MEMORY_FRACTION"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_validator_catches_mistakes() -> None:
    """Strict validation with the bundled schemas rejects a misspelt field and a wrong type."""
    bad = copy.deepcopy(load("deployment.yaml"))
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)
    bad = copy.deepcopy(load("deployment.yaml"))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_fits_the_image_and_impetus(name: str) -> None:
    deployment = load(name)
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    image_env = dockerfile_env("Dockerfile.cuda" if "gpu" in name else "Dockerfile.cpu")

    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    (port,) = container["ports"]
    assert port["containerPort"] == int(image_env["IMPETUS_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]

    user = re.search(
        r"^USER (\d+):(\d+)$", (DEPLOY / "docker" / "Dockerfile.cpu").read_text(), re.M
    )
    assert user is not None
    assert pod["spec"]["securityContext"]["runAsUser"] == int(user.group(1))
    assert pod["spec"]["securityContext"]["fsGroup"] == int(user.group(2))

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts["state"] == image_env["IMPETUS_HOME"]
    assert (
        volumes["state"]["persistentVolumeClaim"]["claimName"]
        == load("pvc.yaml")["metadata"]["name"]
    )

    env = {e["name"]: e for e in container["env"]}
    assert all(known_variable(n) for n in env), sorted(env)
    assert env["IMPETUS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "impetus-api-key"
    # SIGTERM comes after preStop; the drain must end before the kubelet's SIGKILL
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = float(env["IMPETUS_SHUTDOWN_GRACE"]["value"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > pause + grace
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    if "gpu" in name:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_service_pdb_and_ingress_select_the_pods() -> None:
    service, pdb, ingress = load("service.yaml"), load("pdb.yaml"), load("ingress.yaml")
    for name in DEPLOYMENTS:
        pod = load(name)["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        port_names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert service["spec"]["ports"][0]["targetPort"] in port_names
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] == service["spec"]["ports"][0]["name"]


def test_ingress_annotations_match_the_nginx_config() -> None:
    """The Ingress carries the proxy settings of deploy/nginx/impetus-proxy.conf."""
    conf = (DEPLOY / "nginx" / "impetus-proxy.conf").read_text()

    def directive(name: str) -> str:
        m = re.search(rf"^{name} (.*);$", conf, flags=re.MULTILINE)
        assert m, name
        return m.group(1)

    notes = load("ingress.yaml")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "proxy-buffering"] == directive("proxy_buffering") == "off"
    assert notes[prefix + "proxy-body-size"] == directive("client_max_body_size")
    assert notes[prefix + "proxy-read-timeout"] + "s" == directive("proxy_read_timeout")
    assert notes[prefix + "proxy-send-timeout"] + "s" == directive("proxy_send_timeout")
    assert notes[prefix + "proxy-next-upstream"] == directive("proxy_next_upstream")
    # the limits agree with impetus's defaults
    defaults = Settings.model_validate({"api_keys": []})
    size = int(directive("client_max_body_size").removesuffix("m")) << 20
    assert size == defaults.max_body_bytes
    assert float(directive("proxy_read_timeout").removesuffix("s")) > defaults.request_timeout


def test_compose_file_refers_to_shipped_files() -> None:
    compose_dir = DEPLOY / "docker"
    compose = yaml.safe_load((compose_dir / "docker-compose.yml").read_text())
    impetus, nginx = compose["services"]["impetus"], compose["services"]["nginx"]
    assert (compose_dir / impetus["build"]["context"] / impetus["build"]["dockerfile"]).is_file()
    for mount in nginx["volumes"]:
        source = mount.split(":")[0]
        assert (compose_dir / source).is_file(), source
    assert all(known_variable(n) for n in impetus["environment"]), impetus["environment"]
    grace = float(impetus["environment"]["IMPETUS_SHUTDOWN_GRACE"])
    assert float(impetus["stop_grace_period"].removesuffix("s")) > grace
    volume = impetus["volumes"][0].split(":")
    assert volume[0] in compose["volumes"]
    assert volume[1] == dockerfile_env("Dockerfile.cpu")["IMPETUS_HOME"]
    assert nginx["depends_on"]["impetus"]["condition"] == "service_healthy"
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda"):
        env = dockerfile_env(dockerfile)
        assert all(known_variable(n) for n in env if n.startswith("IMPETUS_")), env


def test_every_proxy_hashes_the_header_the_benchmark_sends() -> None:
    """nginx on a host, nginx in compose and the Ingress keep a conversation on one replica by
    the same header that `impetus bench multiturn` sends (and docs/scale.md names)."""
    from impetus.bench.serve import SESSION_HEADER

    variable = "$http_" + SESSION_HEADER.lower().replace("-", "_")
    for upstream in (
        DEPLOY / "nginx" / "impetus-upstream.conf",
        DEPLOY / "docker" / "nginx-upstream.conf",
    ):
        text = upstream.read_text()
        assert re.search(rf"^\s*hash \{variable} consistent;$", text, flags=re.MULTILINE), upstream
        # nginx: a balancing method must come before keepalive
        assert text.index(f"hash {variable}") < text.index("    keepalive")
    notes = load("ingress.yaml")["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/upstream-hash-by"].startswith(variable + "$")
    assert f"`{SESSION_HEADER}`" in (DEPLOY.parent / "docs" / "scale.md").read_text()
