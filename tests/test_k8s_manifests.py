"""deploy/k8s/, rendered for every overlay, is valid and keeps the deployment's promises: every
object validates offline against the Kubernetes schemas (kubernetes-validate, strict) or the
CRD schemas in tests/schemas/; pods run non-root on a read-only root filesystem with every
capability dropped, with limits, pinned images and probes; secrets are referenced, never
inlined; every topic of streams/bus/topics.py has its KafkaTopic; every workload reaches Kafka
over mTLS as its own KafkaUser, whose ACLs are exactly its component's access
(streams/bus/access.py) and never let an edge or poller write another's topics or the state
topics; Prometheus scrapes everything
as job "accessguard"; the custody vault is reached with a projected service-account token
(audience vault), never a stored vault token; and the Dockerfile builds a pinned, non-root
image.

Rendering is tests/kustomize_lite.py (kustomize is not installable from the package index);
where `kubectl` is on PATH its built-in kustomize must give the same objects."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from connectors.base.catalogue import validate_settings
from connectors.base.leak_sources import LEAK_FEEDS
from connectors.custody.settings import OpenBaoSettings
from streams.bus.access import Access, component_access
from streams.bus.topics import Topics, topic_specs
from streams.config import load_config
from streams.detect.load import load_rules
from streams.runtime.secretcheck import secret_uses
from tests.kustomize_lite import CLUSTER_SCOPED, build, split_image

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
SCHEMAS = Path(__file__).resolve().parent / "schemas"
#: Oldest Kubernetes the manifests support, and the newest the validator knows: an apiVersion
#: removed in between (or a field added after the oldest) fails one of the two.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafkatopic-kafka-v1.json",
    ("kafka.strimzi.io/v1", "KafkaUser"): "kafkauser-kafka-v1.json",
}
#: Every apiVersion the manifests may use: current, none deprecated. Strimzi's KafkaTopic is
#: v1 (v1beta2 is deprecated since Strimzi 0.49 and gone in 1.0).
API_VERSIONS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "networking.k8s.io/v1",
    "monitoring.coreos.com/v1",
    "kafka.strimzi.io/v1",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
#: Containers that have no HTTP server, with the reason: they get no HTTP probes.
NO_HTTP = {
    "registry-import": "a run-to-completion Job",
}
#: Probe paths by container (liveness, readiness, startup). A poller's liveness is /livez (its
#: loop runs): a restart never fixes the expired credential its /healthz fails on.
PROBES = {
    "poller": ("/livez", "/readyz", "/livez"),
}
DEFAULT_PROBES = ("/healthz", "/readyz", "/healthz")
HTTP_PORT = 8080
SECRET_NAME = "accessguard-secrets"
SECRET_MOUNT = "/var/run/secrets/accessguard"
IMAGE = "ghcr.io/example/accessguard"
#: The custody vault login: the projected service-account token the workers mount.
VAULT_TOKEN_DIR = "/var/run/secrets/vault"
VAULT_AUDIENCE = "vault"
VAULT_PORT = 8200
#: Strimzi's TLS listener (port 9093, `tls: true`): the only Kafka port the pods reach.
KAFKA_TLS_PORT = 9093
#: The volume of a pod's own KafkaUser Secret (Strimzi's User Operator writes it), and of the
#: cluster CA's ConfigMap.
KAFKA_USER_VOLUME = "kafka-user"
KAFKA_CA_VOLUME = "kafka-ca"
#: KafkaUsers with no workload in an overlay, with the reason.
USERS_WITHOUT_WORKLOAD = {
    "accessguard-registry-import": "production imports the registry from the security team's "
    "pipeline with this user's certificate (deploy/k8s/README.md)",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, build(K8S / "overlays" / request.param)


def _objects(rendered: tuple[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [o for o in rendered[1] if o["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]["spec"]
    return None


def _pods(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(o, spec) for o in objects if (spec := _pod_spec(o)) is not None]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _effective_config(objects: list[dict[str, Any]]) -> tuple[Any, dict[str, str]]:
    """The Config a pod of this overlay loads: config.yaml from its ConfigMap plus the
    ACCESSGUARD_* variables of accessguard-env, read by the real loader."""
    config_map = _one(objects, "ConfigMap", "accessguard-config")
    env = dict(_one(objects, "ConfigMap", "accessguard-env")["data"])
    with tempfile.TemporaryDirectory() as tmp:  # load_config reads a path
        path = Path(tmp) / "config.yaml"
        path.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
        return load_config(path, env=env), env


# --- rendering ------------------------------------------------------------------------------


def test_sync_outputs_are_current() -> None:
    """The rules, dashboards, KafkaTopics and staging registry under deploy/k8s/ are exactly
    what deploy/k8s/sync.py writes from their sources (run it after editing those)."""
    sys.path.insert(0, str(K8S))
    try:
        import sync
    finally:
        sys.path.remove(str(K8S))
    assert sync.stale() == []


def test_overlays_exist_and_render() -> None:
    """staging and production render, each with every kind the deployment needs."""
    assert OVERLAYS == ["production", "staging"]
    for overlay in OVERLAYS:
        kinds = {o["kind"] for o in build(K8S / "overlays" / overlay)}
        assert {
            "Deployment",
            "StatefulSet",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ConfigMap",
            "ServiceMonitor",
            "PrometheusRule",
            "KafkaTopic",
            "PersistentVolumeClaim",
            "ServiceAccount",
        } <= kinds


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not on PATH")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    """Where kubectl is installed, its kustomize renders exactly the objects ours does."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout

    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]

    theirs = {key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {key(o): o for o in build(K8S / "overlays" / overlay)}
    assert sorted(ours) == sorted(theirs)
    for name, obj in ours.items():
        assert obj == theirs[name], name


def test_every_base_file_is_used_and_the_secret_example_is_not() -> None:
    """Every YAML under base/ and the overlays is reachable from a kustomization (a file
    left out would silently not deploy); secrets.example.yaml is reachable from none."""
    referenced: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text(encoding="utf-8"))
        for entry in k.get("resources", []):
            referenced.add((kfile.parent / entry).resolve())
        for patch in k.get("patches", []):
            referenced.add((kfile.parent / patch["path"]).resolve())
        for gen in k.get("configMapGenerator", []):
            for item in gen.get("files", []):
                referenced.add((kfile.parent / item.rpartition("=")[2]).resolve())
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        if path.name == "secrets.example.yaml":
            assert path.resolve() not in referenced
        else:
            assert path.resolve() in referenced, f"{path.relative_to(REPO)} is not deployed"


# --- schemas --------------------------------------------------------------------------------


def test_every_object_validates_against_its_schema(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Built-in kinds against the Kubernetes schemas of the oldest and newest supported
    versions (strict: an unknown field is an error); custom resources against their CRD
    schemas. No object of an unknown or deprecated apiVersion."""
    for obj in rendered[1]:
        assert obj["apiVersion"] in API_VERSIONS, (obj["apiVersion"], obj["kind"])
        crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if crd is not None:
            schema = json.loads((SCHEMAS / crd).read_text(encoding="utf-8"))
            jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


def test_the_validators_reject_what_they_should() -> None:
    """The validation above is live: a misspelt field, a wrong type and a removed apiVersion
    each fail."""
    objects = build(K8S / "overlays" / "production")
    deployment = copy.deepcopy(_one(objects, "StatefulSet", "accessguard-worker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    pdb = copy.deepcopy(_one(objects, "PodDisruptionBudget", "accessguard-worker"))
    pdb["apiVersion"] = "policy/v1beta1"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(pdb, K8S_VERSIONS[-1], strict=True)
    topic = copy.deepcopy(_objects(("", objects), "KafkaTopic")[0])
    topic["spec"]["partitions"] = "12"
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[("kafka.strimzi.io/v1", "KafkaTopic")]).read_text())
    with pytest.raises(jsonschema.ValidationError, match="'12' is not of type 'integer'"):
        jsonschema.validate(topic, schema, cls=jsonschema.Draft202012Validator)


# --- pod policy -----------------------------------------------------------------------------


def test_pods_are_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Non-root, RuntimeDefault seccomp, no host namespaces or hostPath, no API token; every
    container unprivileged, no privilege escalation, read-only root, ALL capabilities dropped
    and none added."""
    pods = _pods(rendered[1])
    assert pods
    for obj, spec in pods:
        where = f"{rendered[0]}/{obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["runAsUser"] > 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), where
        assert spec["automountServiceAccountToken"] is False, where
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], where
        for container in _containers(spec):
            sc = container["securityContext"]
            assert sc.get("privileged") is not True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where


def test_writable_paths_are_volumes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """With a read-only root, /tmp and data_dir are volumes (emptyDir with a size limit, or a
    PVC) in every container, and nothing else is mounted writable."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    writable_allowed = {"/tmp", str(config.data_dir)}
    for obj, spec in _pods(objects):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for claim in obj["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": claim["spec"]}
        for volume in volumes.values():
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), volume["name"]
        for container in _containers(spec):
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert {"/tmp", str(config.data_dir)} <= set(mounts), obj["metadata"]["name"]
            for path, mount in mounts.items():
                kind = next(k for k in volumes[mount["name"]] if k != "name")
                if kind in ("configMap", "secret", "projected"):
                    assert mount.get("readOnly") is True, (obj["metadata"]["name"], path)
                if not mount.get("readOnly"):
                    assert path in writable_allowed, (obj["metadata"]["name"], path)
                    assert kind in ("emptyDir", "persistentVolumeClaim"), path


def test_each_worker_keeps_its_journal_on_its_own_volume(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The worker's data_dir (its journal: the audit copy and the audit chain's head) is a
    PersistentVolumeClaim per pod (a StatefulSet's claim template, ReadWriteOnce), never an
    emptyDir, and the claims are kept when the StatefulSet is scaled down or deleted; its
    governing Service is the headless worker Service."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    worker = _one(objects, "StatefulSet", "accessguard-worker")
    spec = worker["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config.data_dir)]
    assert mount["name"] not in {v["name"] for v in spec["template"]["spec"]["volumes"]}
    (claim,) = [c for c in spec["volumeClaimTemplates"] if c["metadata"]["name"] == mount["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    service = _one(objects, "Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert _labels_match(service["spec"]["selector"], spec["template"]["metadata"]["labels"])


def test_resources_requests_and_limits_everywhere(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Every container requests and limits CPU and memory, requests never above limits."""
    units = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}

    def quantity(text: str | int) -> float:
        number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()  # type: ignore[union-attr]
        return float(number) * units[unit]

    for obj, spec in _pods(rendered[1]):
        for container in _containers(spec):
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request = quantity(resources["requests"][kind])
                limit = quantity(resources["limits"][kind])
                assert 0 < request <= limit, (obj["metadata"]["name"], kind)


def test_images_are_pinned(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """One image, the one the Dockerfile builds, with a version tag or a digest: never
    untagged, never latest; pulled IfNotPresent."""
    for obj, spec in _pods(rendered[1]):
        for container in _containers(spec):
            name, tag, digest = split_image(container["image"])
            assert name == IMAGE, container["image"]
            assert digest or tag, container["image"]
            if digest:
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), container["image"]
            if tag:
                assert tag != "latest", container["image"]
                assert re.fullmatch(r"v?\d+\.\d+\.\d+([-.+][0-9A-Za-z.-]+)?", tag), tag
            assert container["imagePullPolicy"] == "IfNotPresent", obj["metadata"]["name"]


def test_probes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Every container with an HTTP server is probed: liveness /healthz, readiness /readyz, a
    startup probe on /healthz (a poller: /livez, /readyz, /livez), all on the `http` port it
    declares. The exceptions are the containers without a server (NO_HTTP, with the reason)."""
    probed = 0
    for obj, spec in _pods(rendered[1]):
        for container in spec["containers"]:
            if container["name"] in NO_HTTP:
                assert "ports" not in container, container["name"]
                continue
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"http": HTTP_PORT}, obj["metadata"]["name"]
            paths = PROBES.get(container["name"], DEFAULT_PROBES)
            for probe, path in zip(
                ("livenessProbe", "readinessProbe", "startupProbe"), paths, strict=True
            ):
                assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
            probed += 1
    assert probed >= 3


def test_workloads_run_the_documented_commands(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Workers run `accessguard worker`, the HR webhook `connect hr-webhook`, each poller
    `connect poller NAME` for a poller that exists in the configuration, single-replica."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    args = {}
    for obj, spec in _pods(objects):
        (container,) = spec["containers"]
        args[obj["metadata"]["name"]] = container["args"]
        assert container["env"][0] == {
            "name": "ACCESSGUARD_CONFIG",
            "value": "/etc/accessguard/config/config.yaml",
        }
    assert args["accessguard-worker"] == ["worker"]
    assert args["accessguard-hr-webhook"] == ["connect", "hr-webhook"]
    assert args["accessguard-ssf-transmitter"] == ["connect", "ssf-transmitter"]
    pollers = {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] == "Deployment" and args[o["metadata"]["name"]][:2] == ["connect", "poller"]
    }
    assert {args[name][2] for name in pollers} == set(config.pollers)
    for poller in pollers.values():
        assert poller["spec"]["replicas"] == 1
        assert poller["spec"]["strategy"] == {"type": "Recreate"}


# --- config, secrets ------------------------------------------------------------------------


def test_config_loads_and_matches_the_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The rendered config.yaml and environment load with the real loader; the server listens
    on all interfaces on the port the containers declare; the broker is a real Kafka URL; the
    rules ConfigMap is the rule corpus and loads; ConfigMaps are mounted where config says."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    assert config["http.host"] == "0.0.0.0"
    assert config["http.port"] == HTTP_PORT
    assert re.fullmatch(r"kafka://[a-z0-9.-]+:\d+(,[a-z0-9.-]+:\d+)*", config["broker"])
    assert config["topics.replication"] == 3
    rules = _one(objects, "ConfigMap", "accessguard-rules")["data"]
    assert rules == {p.name: p.read_text(encoding="utf-8") for p in (REPO / "rules").glob("*.yaml")}
    worker = _one(objects, "StatefulSet", "accessguard-worker")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in worker["volumes"]}
    assert mounts["rules"] == config["rules.dir"]
    assert volumes["rules"]["configMap"]["name"] == "accessguard-rules"
    assert volumes["config"]["configMap"]["name"] == "accessguard-config"
    assert not [v for v in volumes.values() if "persistentVolumeClaim" in v]  # nothing shared


def test_rules_configmap_loads(tmp_path: Path) -> None:
    """The shipped rules ConfigMap is a valid rule set (the worker refuses to start on one
    that is not), every file a rule but the rule exceptions."""
    data = _one(build(K8S / "overlays" / "production"), "ConfigMap", "accessguard-rules")["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert "exceptions.yaml" in data
    assert len(load_rules(tmp_path).rules) == len(data) - 1


def _secret_refs(config: Any) -> dict[str, set[str]]:
    """Secret references each component needs, as its process's start-up check marks them
    (streams/runtime/secretcheck.py ``secret_uses``, with the arguments its command passes)."""

    def needed(**uses: Any) -> set[str]:
        return {u.secret.reference for u in secret_uses(config, **uses) if u.needed}

    out = {
        "worker": needed(execute=True, doors=config.settings.worker.doors),
        "hr-webhook": needed(serve_hr=True),
        "ssf-transmitter": needed(doors=["transmitter"]),
    }
    for name in config.pollers:
        out[f"poller-{name}"] = needed(pollers=[name])
    return out


def test_secrets_are_referenced_never_inlined(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """No Secret object is rendered; no environment variable holds a value that looks like a
    secret; every secret in the configuration is a file: reference into the mounted Secret;
    each Deployment mounts exactly the keys its component uses, read-only."""
    objects = rendered[1]
    assert not [o for o in objects if o["kind"] == "Secret"]
    config, env = _effective_config(objects)
    secretish = re.compile(r"TOKEN|SECRET|PASSWORD|KEY|WEBHOOK_URL", re.IGNORECASE)
    assert not [k for k in env if secretish.search(k)]
    for key in ("hr.webhook_secret", "auth.ingest_token", "leaks.hmac_key", "leaks.ingest_token"):
        value = config[key]
        assert value is None or value.reference.startswith(f"file:{SECRET_MOUNT}/"), key
    needed = _secret_refs(config)
    for refs in needed.values():
        for ref in refs:
            assert ref.startswith(f"file:{SECRET_MOUNT}/"), ref
    for obj, spec in _pods(objects):
        for container in _containers(spec):
            for var in container.get("env", []):
                assert "value" not in var or not secretish.search(var["name"]), var["name"]
        mounted: set[str] = set()
        for volume in spec.get("volumes", []):
            if "secret" in volume and volume["name"] != KAFKA_USER_VOLUME:
                assert volume["secret"]["secretName"] == SECRET_NAME
                mounted |= {f"file:{SECRET_MOUNT}/{i['path']}" for i in volume["secret"]["items"]}
        component = obj["metadata"]["name"].removeprefix("accessguard-")
        assert mounted == needed.get(component, set()), component


def test_secret_example_lists_exactly_the_mounted_keys() -> None:
    """secrets.example.yaml documents every key the manifests mount, with placeholders only."""
    example = yaml.safe_load((K8S / "secrets.example.yaml").read_text(encoding="utf-8"))
    assert example["metadata"]["name"] == SECRET_NAME
    assert set(example["stringData"].values()) == {"REPLACE_ME"}
    keys: set[str] = set()
    for overlay in OVERLAYS:
        for _, spec in _pods(build(K8S / "overlays" / overlay)):
            for volume in spec.get("volumes", []):
                if "secret" in volume and volume["name"] != KAFKA_USER_VOLUME:
                    keys |= {i["key"] for i in volume["secret"]["items"]}
    assert set(example["stringData"]) == keys


# --- custody vault --------------------------------------------------------------------------


def _custody(config: Any) -> tuple[str, OpenBaoSettings]:
    """The one custody provider (type openbao) of the configuration, validated as
    `accessguard config check` does, and as its settings model."""
    (found,) = [(n, s) for n, s in config.providers.items() if s["type"] == "openbao"]
    name, settings = found
    values, problems = validate_settings("providers", name, settings)
    assert problems == [], problems
    assert values is not None
    return name, OpenBaoSettings.model_validate(dict(settings))


def _vault_token_volumes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        v
        for v in spec.get("volumes", [])
        if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
    ]


def test_custody_logs_in_with_kubernetes_auth(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The shared logins are in custody of the vault (provider type openbao), not a volume:
    no secret_store provider is left; the openbao provider logs in with `auth: kubernetes`
    as role accessguard, from the projected token's path, over TLS, with the holders' login
    mount named; it holds no vault token, AppRole secret or anything else secret."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    assert not [n for n, s in config.providers.items() if s["type"] == "secret_store"]
    _, custody = _custody(config)
    assert custody.missing() == []
    assert custody.auth == "kubernetes"
    assert custody.role == "accessguard"
    assert custody.jwt_path == f"{VAULT_TOKEN_DIR}/token"
    assert custody.token is None
    assert custody.role_id is None
    assert custody.secret_id is None
    assert not custody.dry_run
    assert not custody.embedded
    assert custody.alias_mount
    address = urllib.parse.urlsplit(str(custody.address))
    assert address.scheme == "https", custody.address
    assert address.port == VAULT_PORT, custody.address
    worker = _one(objects, "StatefulSet", "accessguard-worker")["spec"]["template"]["spec"]
    if custody.ca_cert:  # mounted from a ConfigMap
        volumes = {v["name"]: v for v in worker["volumes"]}
        (mount,) = [
            m
            for m in worker["containers"][0]["volumeMounts"]
            if custody.ca_cert.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        assert "configMap" in volumes[mount["name"]], mount
        assert mount["readOnly"] is True


def test_workers_mount_a_projected_vault_token(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The workers (the only pods running providers) mount one projected service-account token
    for audience `vault`, valid an hour (the kubelet renews it), read-only where jwt_path
    points; the API token stays unmounted (automountServiceAccountToken false) and no other
    pod gets a token at all."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    _, custody = _custody(config)
    for obj, spec in _pods(objects):
        assert spec["automountServiceAccountToken"] is False, obj["metadata"]["name"]
        if obj["metadata"]["name"] != "accessguard-worker":
            assert _vault_token_volumes(spec) == [], obj["metadata"]["name"]
    worker = _one(objects, "StatefulSet", "accessguard-worker")["spec"]["template"]["spec"]
    (account,) = _objects(rendered, "ServiceAccount")
    assert worker["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    (volume,) = _vault_token_volumes(worker)
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {
        "audience": VAULT_AUDIENCE,
        "expirationSeconds": 3600,
        "path": "token",
    }
    (container,) = worker["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": VAULT_TOKEN_DIR, "readOnly": True}
    assert custody.jwt_path == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"


#: What would betray a stored vault token: the CLI's variables, a root token, a token value.
VAULT_TOKEN_PATTERN = re.compile(
    r"VAULT_TOKEN|BAO_TOKEN|root[-_ ]?token|\bhvs\.[A-Za-z0-9_-]{10,}|\bs\.[A-Za-z0-9]{20,}",
    re.IGNORECASE,
)


def test_no_vault_token_anywhere(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """No rendered object (Secret, ConfigMap, environment, volume), no file under deploy/k8s/
    and no key of secrets.example.yaml carries or names a vault token: a root token above all,
    but any stored one too. The workers log in with their projected token only."""
    overlay, objects = rendered
    for obj in objects:
        text = yaml.safe_dump(obj)
        assert not VAULT_TOKEN_PATTERN.search(text), (overlay, obj["kind"], obj["metadata"]["name"])
    for path in K8S.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert not VAULT_TOKEN_PATTERN.search(text), path.relative_to(REPO)
    example = yaml.safe_load((K8S / "secrets.example.yaml").read_text(encoding="utf-8"))
    assert not [k for k in example["stringData"] if re.search(r"vault|bao|custody", k, re.I)]
    for _, spec in _pods(objects):
        for container in _containers(spec):
            names = [v["name"] for v in container.get("env", [])]
            assert not [n for n in names if re.match(r"(VAULT|BAO)_", n)], names
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, source
        for volume in spec.get("volumes", []):
            for item in volume.get("secret", {}).get("items", []):
                assert not re.search(r"vault|bao|custody", item["key"], re.I), item


def test_pattern_catches_vault_tokens() -> None:
    """The token check above is live."""
    for leak in ("VAULT_TOKEN", "BAO_TOKEN", "root_token: x", "hvs.CAESIJ0123456789abcdef"):
        assert VAULT_TOKEN_PATTERN.search(leak), leak
    assert not VAULT_TOKEN_PATTERN.search("jwt_path: /var/run/secrets/vault/token")


def test_workers_may_reach_the_vault(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """A NetworkPolicy lets the workers open TCP connections to the vault's port, in the
    namespace of providers.custody.address (a `<service>.<namespace>.svc` name)."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    _, custody = _custody(config)
    address = urllib.parse.urlsplit(str(custody.address))
    host = address.hostname or ""
    assert re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+\.svc(\.cluster\.local)?", host), host
    namespace = host.split(".")[1]
    worker = _one(objects, "StatefulSet", "accessguard-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    allowed = []
    for policy in _objects(rendered, "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"]:
            continue
        if not _labels_match(spec["podSelector"].get("matchLabels", {}), labels):
            continue
        for rule in spec.get("egress", []):
            if {"port": address.port, "protocol": "TCP"} not in rule["ports"]:
                continue
            for peer in rule["to"]:
                selector = peer["namespaceSelector"]["matchLabels"]
                allowed.append(selector["kubernetes.io/metadata.name"])
    assert allowed == [namespace]


# --- topics ---------------------------------------------------------------------------------


def test_every_topic_has_its_kafkatopic(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """One KafkaTopic per topic of streams/bus/topics.py (for this overlay's configuration), with
    its partitions, 3 replicas, min.insync.replicas 2 and compaction exactly where the topic
    is compacted; no other KafkaTopic."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    topics = {t["spec"]["topicName"]: t for t in _objects(rendered, "KafkaTopic")}
    specs = topic_specs(config)
    assert set(topics) == {s.name for s in specs}
    for spec in specs:
        topic = topics[spec.name]["spec"]
        assert topic["partitions"] == spec.partitions, spec.name
        assert topic["replicas"] == 3, spec.name
        assert topic["config"]["min.insync.replicas"] == 2, spec.name
        policy = "compact" if spec.compacted else "delete"
        assert topic["config"]["cleanup.policy"] == policy, spec.name
        assert topic["config"].get("max.message.bytes") == spec.max_message_bytes, spec.name
    compacted = {s.name.removeprefix("accessguard.") for s in specs if s.compacted}
    assert compacted == {"registry.changes", "lifecycle", "ledger", "rule.state", "leak.index"}


def test_kafka_cluster_is_one_and_the_same(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The KafkaTopics' strimzi.io/cluster, the broker address (Strimzi's
    <cluster>-kafka-bootstrap.<namespace> service) and the Kafka egress rule name one cluster in
    one namespace; workers are no more than the partitions they share."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    clusters = {
        t["metadata"]["labels"]["strimzi.io/cluster"]
        for t in [*_objects(rendered, "KafkaTopic"), *_objects(rendered, "KafkaUser")]
    }
    (cluster,) = clusters
    host = config["broker"].removeprefix("kafka://").split(",")[0]
    assert re.fullmatch(
        rf"{cluster}-kafka-bootstrap\.([a-z0-9-]+)\.svc(\.cluster\.local)?:{KAFKA_TLS_PORT}", host
    )
    namespace = host.split(".")[1]
    policy = _one(objects, "NetworkPolicy", "accessguard-egress-kafka")
    (rule,) = policy["spec"]["egress"]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    assert peer["podSelector"]["matchLabels"]["strimzi.io/cluster"] == cluster
    workers = _one(objects, "StatefulSet", "accessguard-worker")["spec"]["replicas"]
    assert 2 <= workers <= int(config["topics.partitions"])


# --- Kafka users ----------------------------------------------------------------------------


def _granted(user: dict[str, Any], prefix: str) -> Access:
    """The topics a rendered KafkaUser may read and write and the groups it may join; every
    ACL must be one of the three shapes accessguard uses (anything else fails here)."""
    read: set[str] = set()
    write: set[str] = set()
    groups: set[str] = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource, operations = acl["resource"], acl["operations"]
        assert acl.get("type", "allow") == "allow", acl
        assert "host" not in acl, acl
        if resource.get("patternType") == "prefix":
            assert resource == {"type": "topic", "name": prefix, "patternType": "prefix"}, acl
            assert operations == ["Describe"], acl
        elif resource["type"] == "topic":
            assert set(operations) <= {"Read", "Write"}, acl
            if "Read" in operations:
                read.add(resource["name"])
            if "Write" in operations:
                write.add(resource["name"])
        else:
            assert resource["type"] == "group", acl
            assert operations == ["Read"], acl
            groups.add(resource["name"])
    return Access(frozenset(read), frozenset(write), frozenset(groups))


def _users(rendered: tuple[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {u["metadata"]["name"]: u for u in _objects(rendered, "KafkaUser")}


def test_every_kafka_client_uses_its_own_kafkauser_over_mtls(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Every workload (each talks to Kafka) mounts the Secret of the KafkaUser named after it
    and no other user's, and the cluster CA, where the configuration's kafka section reads
    them; the broker is the TLS listener; every KafkaUser is used (or says why not)."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    kafka = config.settings.kafka
    assert kafka.security_protocol == "SSL"
    assert config["broker"].endswith(f":{KAFKA_TLS_PORT}")
    users = _users(rendered)
    used = set()
    for obj, spec in _pods(objects):
        name = obj["metadata"]["name"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        own = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") in users]
        assert [v["name"] for v in own] == [KAFKA_USER_VOLUME], name
        assert own[0]["secret"]["secretName"] == name, name
        assert {i["key"] for i in own[0]["secret"]["items"]} == {"user.crt", "user.key"}
        assert volumes[KAFKA_CA_VOLUME]["configMap"]["items"] == [
            {"key": "ca.crt", "path": "ca.crt"}
        ]
        (container,) = spec["containers"]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        for volume, path in (
            (KAFKA_USER_VOLUME, kafka.cert_file),
            (KAFKA_USER_VOLUME, kafka.key_file),
            (KAFKA_CA_VOLUME, kafka.ca_file),
        ):
            assert mounts[volume]["readOnly"] is True
            assert path.startswith(mounts[volume]["mountPath"] + "/"), (name, path)
        used.add(name)
    assert set(users) - used <= set(USERS_WITHOUT_WORKLOAD), set(users) - used


def test_kafkauser_acls_are_what_the_code_needs(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Each KafkaUser authenticates with mTLS and is granted exactly its component's access
    (streams/bus/access.py, for this overlay's configuration: topic names from
    streams.bus.topics, the worker's consumer group): no Create, Delete, Alter or cluster
    operation for anyone, Describe on accessguard's topics only."""
    config, _ = _effective_config(rendered[1])
    access = component_access(config, LEAK_FEEDS)
    prefix = config["topics.prefix"] + "."
    users = _users(rendered)
    assert users
    for name, user in users.items():
        assert user["spec"]["authentication"] == {"type": "tls"}, name
        assert user["spec"]["authorization"]["type"] == "simple", name
        assert _granted(user, prefix) == access[name.removeprefix("accessguard-")], name


def _write_violations(users: dict[str, dict[str, Any]], config: Any) -> list[str]:
    """Who writes what they must not: the registry and the leak-index snapshots are written
    by the registry importer and the worker at most; the HR edge writes only input topics
    (hr.events, and with Okta Event Hooks auth.events and identity.events) and a poller only
    its input topics (auth.events with identity.events, or leak.records) and
    their dead letters."""
    t = Topics.from_config(config)
    prefix = config["topics.prefix"] + "."
    inputs = {
        "hr-webhook": [{t.hr_events, t.auth_events, t.identity_events}],
        "poller": [{t.auth_events, t.auth_dlq, t.identity_events}, {t.leak_records, t.leak_dlq}],
    }
    out = []
    for name, user in users.items():
        component = name.removeprefix("accessguard-")
        writes = set(_granted(user, prefix).write)
        for topic in writes & {t.registry, t.leak_index}:
            if component not in ("registry-import", "worker"):
                out.append(f"{component} writes {topic}")
        kind = "poller" if component.startswith("poller-") else component
        if kind in inputs and not any(writes <= allowed for allowed in inputs[kind]):
            out.append(f"{component} writes {sorted(writes)}")
    return out


def test_only_the_importer_and_the_worker_write_state_and_edges_only_their_input(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """On the rendered ACLs themselves: nobody but the registry importer and the worker may
    write the registry or leak-index topics, and the HR edge and pollers write only their
    input topics. The check finds a poller given the registry."""
    config, _ = _effective_config(rendered[1])
    users = _users(rendered)
    assert _write_violations(users, config) == []
    doctored = copy.deepcopy(users)
    poller = next(u for n, u in doctored.items() if n.startswith("accessguard-poller-"))
    registry = Topics.from_config(config).registry
    poller["spec"]["authorization"]["acls"].append(
        {"resource": {"type": "topic", "name": registry}, "operations": ["Write"]}
    )
    violations = _write_violations(doctored, config)
    assert any(v.endswith(f"writes {registry}") for v in violations), violations


# --- services, disruption, network ----------------------------------------------------------


def test_services_select_pods_and_pdbs_allow_drains(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Every Service and PDB selects exactly one Deployment's or StatefulSet's pods; every one
    with an HTTP port has a Service, and a PDB unless it is a single replica (a PDB there only
    blocks drains); a PDB never forbids every voluntary eviction."""
    objects = rendered[1]
    deployments = _objects(rendered, "Deployment") + _objects(rendered, "StatefulSet")

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            d
            for d in deployments
            if _labels_match(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    served = set()
    for service in _objects(rendered, "Service"):
        (deployment,) = selected(service["spec"]["selector"])
        served.add(deployment["metadata"]["name"])
        ports = {
            p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    with_http = {
        d["metadata"]["name"]
        for d in deployments
        if "ports" in d["spec"]["template"]["spec"]["containers"][0]
    }
    assert served == with_http
    pdbs = _objects(rendered, "PodDisruptionBudget")
    single = {d["metadata"]["name"] for d in deployments if d["spec"].get("replicas") == 1}
    assert {p["metadata"]["name"] for p in pdbs} == with_http - single
    for pdb in pdbs:
        (deployment,) = selected(pdb["spec"]["selector"]["matchLabels"])
        replicas = deployment["spec"]["replicas"]
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < replicas, pdb["metadata"]["name"]
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1
    assert objects


def test_network_policy(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Default deny for every accessguard pod; ingress only to the `http` port, only from the
    ingress controller's namespace (HR webhook) and Prometheus; egress only DNS (53), Kafka
    (9092), HTTPS (443) to public addresses, the last only for workers and pollers, and the
    custody vault (8200) for workers only, to a namespace and pods, never an address range."""
    policies = {p["metadata"]["name"]: p["spec"] for p in _objects(rendered, "NetworkPolicy")}
    deny = policies["accessguard-default-deny"]
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "accessguard"}}
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    for spec in policies.values():
        for rule in spec.get("ingress", []):
            assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                assert peer == prometheus or namespace == "ingress-nginx", peer
        for rule in spec.get("egress", []):
            ports = {p["port"] for p in rule["ports"]}
            assert ports <= {53, KAFKA_TLS_PORT, 443, VAULT_PORT}, ports
            if VAULT_PORT in ports:
                assert ports == {VAULT_PORT}, ports
                assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
                    "worker"
                )
                for peer in rule["to"]:
                    assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            if 443 in ports:
                components = spec["podSelector"]["matchExpressions"][0]["values"]
                assert sorted(components) == ["poller", "ssf-transmitter", "worker"]
                for peer in rule["to"]:
                    net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                    excluded = [ipaddress.ip_network(c) for c in peer["ipBlock"]["except"]]
                    assert all(not n.is_global for n in excluded), excluded
                    assert [n for n in excluded if n.is_link_local], "metadata address"
                    assert len(excluded) >= 3, net
    ingress_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }
    # the ingress controller reaches exactly the pods the Ingress routes to; others only
    # Prometheus (pollers)
    reached = {
        name.removeprefix("accessguard-ingress-")
        for name, spec in policies.items()
        if any(ingress_controller in rule["from"] for rule in spec.get("ingress", []))
    }
    assert reached == {"hr-webhook", "worker", "ssf-transmitter"}
    for name in reached:
        assert policies[f"accessguard-ingress-{name}"]["ingress"][0]["from"] == [
            ingress_controller,
            prometheus,
        ]
    assert policies["accessguard-ingress-poller"]["ingress"][0]["from"] == [prometheus]


#: Where each public path must go: the component whose process serves it. SCIM and the SSF
#: push receiver write the registry topic, so they are the workers' (worker.doors), never the
#: HR edge's; the transmitter's key material is served by the transmitter alone.
PUBLIC_PATHS = {
    "/v1/hr/events": "hr-webhook",
    "/v1/okta/event-hooks": "hr-webhook",
    "/scim/v2": "worker",
    "/ssf/push": "worker",
    "/.well-known/jwks.json": "ssf-transmitter",
    "/.well-known/ssf-configuration": "ssf-transmitter",
}


def _routes(rendered: tuple[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Ingress path -> the component of the workload its backend Service selects."""
    objects = rendered[1]
    services = {s["metadata"]["name"]: s for s in _objects(rendered, "Service")}
    workloads = _objects(rendered, "Deployment") + _objects(rendered, "StatefulSet")
    out = {}
    for ingress in _objects(rendered, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = services[backend["name"]]
                assert backend["port"] == {"name": "http"}, path
                (workload,) = [
                    w
                    for w in workloads
                    if _labels_match(
                        service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]
                    )
                ]
                labels = workload["spec"]["template"]["metadata"]["labels"]
                out[path["path"]] = labels["app.kubernetes.io/component"]
    assert objects
    return out


def test_ingress_routes_each_door_only_to_the_pods_that_serve_it(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The Ingress routes exactly the public doors, each to its component: HR to the HR
    edge, SCIM and SSF push to the workers (whose configuration turns those
    doors on), the JWKS and SSF configuration to the transmitter; /metrics, /readyz,
    /v1/ssf/status and the ingest endpoints are not routed. TLS covers every host."""
    (ingress,) = _objects(rendered, "Ingress")
    assert _routes(rendered) == PUBLIC_PATHS
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
    config, _ = _effective_config(rendered[1])
    assert set(config.settings.worker.doors) == {"scim", "ssf"}
    assert config.settings.ssf.signing_key is not None  # the transmitter pod starts


def test_ssf_transmitter_runs_once_and_only_it_holds_the_signing_key(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """One transmitter pod at most (a one-replica StatefulSet: no surge, no overlap), its
    checkpoint on a claim of its own; the signing key is mounted in that pod alone and the
    SCIM token in the workers alone; its KafkaUser reads the audit topic and the registry and
    writes nothing; the workers' KafkaUser may write the registry (SCIM, SSF) but the HR
    edge's may not."""
    objects = rendered[1]
    config, _ = _effective_config(objects)
    transmitter = _one(objects, "StatefulSet", "accessguard-ssf-transmitter")
    assert transmitter["spec"]["replicas"] == 1
    (claim,) = transmitter["spec"]["volumeClaimTemplates"]
    (container,) = transmitter["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(config.data_dir)] == claim["metadata"]["name"]
    holders: dict[str, set[str]] = {}
    for obj, spec in _pods(objects):
        for volume in spec.get("volumes", []):
            if volume.get("secret", {}).get("secretName") == SECRET_NAME:
                for item in volume["secret"]["items"]:
                    holders.setdefault(item["key"], set()).add(obj["metadata"]["name"])
    assert holders["ssf-signing-key"] == {"accessguard-ssf-transmitter"}
    assert holders["scim-token"] == {"accessguard-worker"}
    prefix = config["topics.prefix"] + "."
    users = _users(rendered)
    t = Topics.from_config(config)
    granted = _granted(users["accessguard-ssf-transmitter"], prefix)
    assert granted == Access(read=frozenset({t.audit, t.registry}))
    assert t.registry in _granted(users["accessguard-worker"], prefix).write
    assert t.registry not in _granted(users["accessguard-hr-webhook"], prefix).write


def test_worker_writes_the_registry_only_with_a_door_that_needs_it() -> None:
    """A worker without doors never writes the registry; SCIM adds the registry; SSF adds the
    registry, identity.events and leak.records; the transmitter exists with a signing key."""
    base = load_config(K8S / "base" / "config.yaml", env={})
    t = Topics.from_config(base)
    plain = component_access(base.with_overrides(worker__doors=[]), LEAK_FEEDS)["worker"]
    scim = component_access(base.with_overrides(worker__doors=["scim"]), LEAK_FEEDS)["worker"]
    ssf = component_access(base.with_overrides(worker__doors=["ssf"]), LEAK_FEEDS)["worker"]
    assert t.registry not in plain.write
    assert scim.write - plain.write == {t.registry}
    assert ssf.write - plain.write == {t.registry, t.identity_events, t.leak_records}
    assert plain.read == scim.read == ssf.read
    assert "ssf-transmitter" in component_access(base, LEAK_FEEDS)


def test_the_hr_edge_writes_login_and_identity_events_only_with_okta_event_hooks() -> None:
    """The Okta Event Hook door publishes account locks to auth.events and MFA resets to
    identity.events (connectors/okta/event_hook.py): the HR edge may write them exactly while
    hooks.event_hook_secret is set, and hr.events always."""
    base = load_config(K8S / "base" / "config.yaml", env={})
    t = Topics.from_config(base)
    hooked = component_access(base, LEAK_FEEDS)["hr-webhook"]
    assert base["hooks.event_hook_secret"] is not None
    assert hooked.write == {t.hr_events, t.auth_events, t.identity_events}
    plain = component_access(base.with_overrides(hooks__event_hook_secret=None), LEAK_FEEDS)
    assert plain["hr-webhook"].write == {t.hr_events}


# --- monitoring -----------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_as_job_accessguard(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The ServiceMonitor selects every Service; the job label prometheus-operator derives
    (the Service's jobLabel label, else the Service name) is "accessguard" for each, as the
    alert rules' up{job="accessguard"} needs; it scrapes the `http` port's /metrics."""
    (monitor,) = _objects(rendered, "ServiceMonitor")
    spec = monitor["spec"]
    services = _objects(rendered, "Service")
    assert services
    for service in services:
        labels = service["metadata"]["labels"]
        assert _labels_match(spec["selector"]["matchLabels"], labels), service["metadata"]["name"]
        job = labels.get(spec.get("jobLabel", ""), service["metadata"]["name"])
        assert job == "accessguard", service["metadata"]["name"]
        assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"] == [
        {
            "port": "http",
            "path": "/metrics",
            "scheme": "http",
            "interval": "15s",
            "scrapeTimeout": "10s",
        }
    ]
    rules = (REPO / "deploy" / "prometheus" / "accessguard-rules.yaml").read_text(encoding="utf-8")
    assert 'up{job="accessguard"}' in rules


def test_prometheus_rule_and_dashboards_ship(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The PrometheusRule is the generated deploy/k8s/base/prometheusrule.yaml; the dashboards
    ConfigMap carries every dashboard unchanged, labelled for the Grafana sidecar."""
    generated = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8"))
    (rule,) = _objects(rendered, "PrometheusRule")
    assert rule["spec"] == generated["spec"]
    dashboards = _one(rendered[1], "ConfigMap", "accessguard-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    expected = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "dashboards").glob("*.json")}
    assert dashboards["data"] == expected
    assert sum(len(v) for v in dashboards["data"].values()) < 900_000  # ConfigMaps: 1 MiB


def test_objects_are_namespaced_by_the_overlay(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Every namespaced object is in the overlay's namespace and carries the common labels."""
    overlay, objects = rendered
    namespaces = {
        o["metadata"].get("namespace") for o in objects if o["kind"] not in CLUSTER_SCOPED
    }
    assert len(namespaces) == 1
    assert None not in namespaces
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "accessguard", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == f"accessguard-{overlay}"


# --- Dockerfile -----------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, rest = stripped.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_is_pinned_non_root_and_slim() -> None:
    """Every FROM is a slim Python base pinned by tag and sha256 digest (never latest); the
    final stage installs the wheel built in the first with no pip cache, runs as a non-root
    numeric USER and has `accessguard` as its entrypoint; no ADD."""
    instructions = _dockerfile()
    froms = [rest for ins, rest in instructions if ins == "FROM"]
    assert len(froms) == 2
    for image in froms:
        reference = image.split()[0]
        name, tag, digest = split_image(reference)
        assert name == "python", reference
        assert tag is not None, reference
        assert "slim" in tag, reference
        assert tag != "latest", reference
        assert digest is not None, reference
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), reference
    assert froms[0].endswith(" AS build")
    final = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    assert not [ins for ins, _ in instructions if ins == "ADD"]
    users = [rest for ins, rest in final if ins == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric USER so runAsNonRoot can verify it"
    assert int(uid) != 0
    assert int(uid) == 10001  # the pods' runAsUser
    assert [rest for ins, rest in final if ins == "ENTRYPOINT"] == ['["accessguard"]']
    runs = [rest for ins, rest in instructions if ins == "RUN"]
    pip = [r for r in runs if "pip " in r]
    assert pip
    assert all("--no-cache-dir" in r for r in pip)
    assert any("pip wheel" in r for r in pip)
    assert any("--no-index" in r and "--find-links" in r for r in pip)
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "**", "deny everything by default, then allow what the build needs"
    assert "!.venv" not in ignore
    assert "!data" not in ignore


def test_manifests_and_image_agree_on_the_user() -> None:
    """The pods' runAsUser/runAsGroup are the Dockerfile's USER."""
    user = next(rest for ins, rest in reversed(_dockerfile()) if ins == "USER")
    uid, gid = (int(x) for x in user.split(":"))
    for _, spec in _pods(build(K8S / "overlays" / "production")):
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (
            uid,
            gid,
        )
