"""The Kubernetes manifests in deploy/kubernetes/ are not run here, but they
must stay consistent with the plugin: each parses, the driver has the
plugin's name, every `osd` container's arguments are ones `osd csi`
takes, and the sockets the sidecars dial are the ones the plugin serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from osd.cli import build_parser
from osd.csi.identity import PLUGIN_NAME

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def documents() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", []))


def test_the_manifests_name_the_plugin_and_use_its_flags() -> None:
    docs = documents()
    kustomization = next(d for d in docs if d["kind"] == "Kustomization")
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    [driver] = [d for d in docs if d["kind"] == "CSIDriver"]
    assert driver["metadata"]["name"] == PLUGIN_NAME
    modes = set()
    for doc in docs:
        for c in containers(doc):
            if c["image"].startswith("osd:"):
                args = build_parser().parse_args(c["args"])
                assert args.command == "csi"
                modes.add(args.mode)
                served = args.endpoint.removeprefix("unix://")
                mounts = {m["mountPath"] for m in c["volumeMounts"]}
                assert str(Path(served).parent) in mounts
            else:
                dialed = next(a for a in c["args"] if a.startswith("--csi-address="))
                assert dialed == "--csi-address=/csi/csi.sock"
    assert modes == {"controller", "node"}
    for doc in docs:
        if doc["kind"] == "StorageClass":
            assert doc["provisioner"] == PLUGIN_NAME
            allowed = {"replicas", "failureDomain", "provisioning", "clusterId", "templateId"}
            assert {k for k in doc["parameters"] if "/" not in k} <= allowed
