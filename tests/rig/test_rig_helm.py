"""The repo's Helm chart lints and renders with the pinned helm."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tidemark_rig.fixtures import helm

pytestmark = pytest.mark.rig

CHART = Path(__file__).resolve().parents[2] / "charts" / "tidemark"


def test_helm_lint(tmp_path: Path) -> None:
    out = helm(tmp_path, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_helm_template(tmp_path: Path) -> None:
    out = helm(tmp_path, "template", "demo", str(CHART), "--namespace", "tm",
               "--set", "image.tag=dev")
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) >= {"ServiceAccount", "Deployment", "CustomResourceDefinition"}
    assert "ConfigMap" not in kinds  # nothing read the old one
    assert "--image=tidemark:dev" in kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert kinds["Deployment"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
