"""A small Kustomize renderer for the subset deploy/k8s/ uses, so the manifests are rendered and
validated by every `make test` run without a kustomize binary.

Supported (and nothing else: any other kustomization field raises, so a new feature in the
manifests cannot be silently mis-rendered):

- ``resources``: files (multi-document YAML) and directories holding a kustomization;
- ``configMapGenerator`` (files with optional ``key=path``, literals, ``behavior``
  create|merge|replace, ``options.labels``/``annotations``), only with hash suffixes disabled;
- ``patches``: strategic-merge patches from ``path`` or inline ``patch``, applied by kind and
  name or to every resource a ``target`` (kind, name, labelSelector ``k=v``) selects; lists
  merge by their Kubernetes patch-merge key (containers by name, volumeMounts by mountPath,
  ...) in workload and Service kinds and are replaced everywhere else, as kustomize does for
  types without a schema (CRDs) and for atomic lists (NetworkPolicy rules);
- ``namespace``, ``labels`` (pairs with includeSelectors false, includeTemplates),
  ``replicas``, ``images`` (newName, newTag, digest).

Transformers run in kustomize's order: patches, namespace, labels, replicas, images.
When ``kubectl`` is on PATH, tests/test_k8s_manifests.py compares this output with
``kubectl kustomize`` object by object.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "generatorOptions",
    "patches",
    "namespace",
    "labels",
    "replicas",
    "images",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
#: Patch-merge keys of the lists the manifests patch, by kind and by the path's last field.
#: Lists not named here are replaced whole.
_POD_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
MERGE_KEYS: dict[str, dict[str, str]] = dict.fromkeys(WORKLOADS, _POD_MERGE_KEYS)
MERGE_KEYS["Service"] = {"ports": "port"}


class UnsupportedError(ValueError):
    """The kustomization uses something this renderer does not implement."""


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def build(directory: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``directory`` like ``kubectl kustomize directory``."""
    root = Path(directory)
    k = yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(k) - SUPPORTED
    if unknown:
        raise UnsupportedError(f"{root}: kustomization fields not supported: {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = root / entry
        objects.extend(build(path) if path.is_dir() else _load_docs(path))
    _generate(root, k, objects)
    for patch in k.get("patches", []):
        _apply_patch(root, patch, objects)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        _labels(entry, objects)
    for entry in k.get("replicas", []):
        for obj in objects:
            if obj["kind"] in WORKLOADS - {"Job"} and obj["metadata"]["name"] == entry["name"]:
                obj["spec"]["replicas"] = entry["count"]
    for entry in k.get("images", []):
        for obj in objects:
            _images(obj, entry)
    return objects


def _generate(root: Path, k: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    default_no_hash = bool(k.get("generatorOptions", {}).get("disableNameSuffixHash"))
    for gen in k.get("configMapGenerator", []):
        options = gen.get("options", {})
        if not options.get("disableNameSuffixHash", default_no_hash):
            raise UnsupportedError(f"{root}: {gen['name']}: hash suffixes are not implemented")
        data: dict[str, str] = {}
        for item in gen.get("files", []):
            name, _, source = item.rpartition("=") if "=" in item else ("", "", item)
            data[name or Path(source).name] = (root / source).read_text(encoding="utf-8")
        for literal in gen.get("literals", []):
            name, sep, value = literal.partition("=")
            if not sep:
                raise UnsupportedError(f"{root}: literal {literal!r} has no '='")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            data[name] = value
        behavior = gen.get("behavior", "create")
        existing = [o for o in objects if _key(o) == ("ConfigMap", gen["name"])]
        if behavior == "create":
            if existing:
                raise ValueError(f"{root}: ConfigMap {gen['name']} already exists")
            meta: dict[str, Any] = {"name": gen["name"]}
            if options.get("labels"):
                meta["labels"] = dict(options["labels"])
            if options.get("annotations"):
                meta["annotations"] = dict(options["annotations"])
            objects.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
            )
            continue
        if len(existing) != 1:
            raise ValueError(f"{root}: {behavior}: no ConfigMap {gen['name']} to {behavior}")
        target = existing[0]
        if behavior == "merge":
            target.setdefault("data", {}).update(data)
        elif behavior == "replace":
            target["data"] = data
        else:
            raise UnsupportedError(f"{root}: behavior {behavior!r}")
        for field in ("labels", "annotations"):
            if options.get(field):
                target["metadata"].setdefault(field, {}).update(options[field])


def _selected(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "labelSelector"}
    if unknown:
        raise UnsupportedError(f"patch target fields not supported: {sorted(unknown)}")
    if "kind" in target and obj["kind"] != target["kind"]:
        return False
    if "name" in target and not re.fullmatch(target["name"], obj["metadata"]["name"]):
        return False
    if "labelSelector" in target:
        labels = obj["metadata"].get("labels", {})
        for term in target["labelSelector"].split(","):
            name, _, value = term.partition("=")
            if labels.get(name.strip()) != value.strip():
                return False
    return True


def _apply_patch(root: Path, entry: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if "path" in entry:
        docs = _load_docs(root / entry["path"])
    else:
        docs = [d for d in yaml.safe_load_all(entry["patch"]) if d]
    for doc in docs:
        if "$patch" in doc:
            raise UnsupportedError(f"{root}: $patch directives on whole objects")
        if "target" in entry:
            matched = [o for o in objects if _selected(o, entry["target"])]
        else:
            matched = [o for o in objects if _key(o) == _key(doc)]
        if not matched:
            raise ValueError(f"{root}: patch {entry} matches no resource")
        for obj in matched:
            body = copy.deepcopy(doc)
            body.pop("apiVersion", None)
            body.pop("kind", None)
            meta = body.get("metadata", {})
            meta.pop("name", None)
            meta.pop("namespace", None)
            merged = _merge(obj, body, obj["kind"])
            obj.clear()
            obj.update(merged)


def _merge(base: Any, patch: Any, kind: str, field: str = "") -> Any:
    """Strategic merge of ``patch`` into ``base`` (maps recursively; ``null`` deletes)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for name, value in patch.items():
            if name.startswith("$"):
                raise UnsupportedError(f"patch directive {name}")
            if value is None:
                out.pop(name, None)
            elif name in out:
                out[name] = _merge(out[name], value, kind, name)
            else:
                out[name] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        merge_key = MERGE_KEYS.get(kind, {}).get(field)
        if merge_key is None:
            return copy.deepcopy(patch)
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next(
                (i for i, b in enumerate(out) if b.get(merge_key) == item.get(merge_key)), None
            )
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = _merge(out[index], item, kind)
        return out
    return copy.deepcopy(patch)


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The templates ``includeTemplates`` labels: pod templates, and a StatefulSet's volume
    claim templates (kustomize labels those too)."""
    if obj["kind"] in WORKLOADS:
        return [obj["spec"]["template"], *obj["spec"].get("volumeClaimTemplates", [])]
    if obj["kind"] == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]]
    return []


def _labels(entry: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if entry.get("includeSelectors") or entry.get("fields"):
        raise UnsupportedError("labels: includeSelectors and fields are not implemented")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
        if entry.get("includeTemplates"):
            for template in _pod_templates(obj):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` -> (name, tag, digest); a registry port is not a tag."""
    name, _, digest = image.partition("@")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _images(node: Any, entry: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for field, value in node.items():
            if field in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    container["image"] = _new_image(container["image"], entry)
            else:
                _images(value, entry)
    elif isinstance(node, list):
        for item in node:
            _images(item, entry)


def _new_image(image: str, entry: dict[str, Any]) -> str:
    name, tag, digest = split_image(image)
    if name != entry["name"]:
        return image
    name = entry.get("newName", name)
    if "digest" in entry:
        return f"{name}@{entry['digest']}"
    tag = entry.get("newTag", tag)
    out = f"{name}:{tag}" if tag else name
    return f"{out}@{digest}" if digest and "newTag" not in entry else out
