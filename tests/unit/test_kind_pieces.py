"""The offline kind path's small pure pieces (the cluster itself is tested under tests/kind)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tidemark_operator.instance_resources import instance_deployment
from tidemark_operator.spec import ClusterSpec
from tidemark_rig.kind import app_image, egress, host, kubectl, nodeimage, privileged
from tidemark_rig.pod_runner import pod_bind
from tidemark_rig.procs import RigError

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_docs_install_the_chart_with_the_command_kind_up_runs() -> None:
    assert f"helm {kubectl.HELM_INSTALL}" in (ROOT / "docs" / "kind.md").read_text()


def test_the_wrapper_is_used_only_without_cap_sys_resource(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t000001fffeffffff\n")
    assert not privileged.bounding_set(status) >> privileged.CAP_SYS_RESOURCE & 1
    status.write_text("CapBnd:\t000001ffffffffff\n")
    assert privileged.bounding_set(status) >> privileged.CAP_SYS_RESOURCE & 1


def test_the_wrapper_rewrites_privileged_for_run_and_drops_it_for_exec(tmp_path: Path) -> None:
    echo = tmp_path / "echo-args"
    echo.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    echo.chmod(0o755)
    wrapper = tmp_path / "docker"
    wrapper.write_text(privileged.WRAPPER.format(real=echo))
    wrapper.chmod(0o755)

    def args(*a: str) -> list[str]:
        return subprocess.run([str(wrapper), *a], capture_output=True, text=True, check=True).stdout.split("\n")[:-1]

    run = args("run", "--privileged", "-d", "img")
    assert "--privileged" not in run and "--cap-drop=SYS_RESOURCE" in run and "--cap-add=ALL" in run
    assert "a *:* rwm" in " ".join(run) and run[-2:] == ["-d", "img"]
    assert args("exec", "--privileged", "c", "ls") == ["exec", "c", "ls"]
    assert args("ps", "--privileged") == ["ps", "--privileged"]  # only run/create/exec are touched


def test_host_limits_are_raised_never_lowered(tmp_path: Path) -> None:
    inotify = tmp_path / "fs" / "inotify"
    inotify.mkdir(parents=True)
    (inotify / "max_user_instances").write_text("128\n")
    (inotify / "max_user_watches").write_text("99999999\n")
    assert host.raise_limits(tmp_path) == {"fs.inotify.max_user_instances": 8192}
    assert (inotify / "max_user_watches").read_text() == "99999999\n"
    assert host.raise_limits(tmp_path) == {}


def test_the_image_build_never_empties_a_wheels_directory_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "dist" / "wheels" / "mine.whl"
    mine.parent.mkdir(parents=True)
    mine.write_text("a user's file")
    with pytest.raises(RigError, match="not made by tidemark"):
        app_image.build_wheels(tmp_path, tmp_path / "log")
    assert mine.read_text() == "a user's file"


def test_the_node_image_preloads_exactly_the_images_the_minio_example_names() -> None:
    docs = yaml.safe_load_all((ROOT / "examples" / "minio.yaml").read_text())
    named = {c["image"] for d in docs if d and d["kind"] in ("Deployment", "Job")
             for c in d["spec"]["template"]["spec"]["containers"]}
    assert named == set(nodeimage.EXAMPLE_IMAGES.values())


def test_instances_listen_on_every_pod_address_so_port_forward_reaches_them() -> None:
    """kubectl port-forward dials 127.0.0.1 in the pod: a bind to the pod IP alone refused
    it (the database-on-kind failure). The rig's pod runner maps the wildcard to the pod IP."""
    cmd = instance_deployment("db", "default", "writer", 1, ClusterSpec.model_validate({}))[
        "spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--listen") + 1] == "0.0.0.0:5432"
    assert pod_bind("0.0.0.0:5432", "127.0.9.4") == "127.0.9.4:5432"
    assert pod_bind("127.0.0.1:5432", "127.0.9.4") == "127.0.0.1:5432"
    assert pod_bind("0.0.0.0", "127.0.9.4") == "127.0.9.4"  # `--host 0.0.0.0`
    assert pod_bind("0.0.0.0", "") == "0.0.0.0"


def test_a_loopback_host_resolver_is_what_dockerd_would_dial_past_the_guard(tmp_path: Path) -> None:
    text = "# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nsearch lan\nnameserver bad\n"
    assert egress.loopback_resolvers(text) == ["127.0.0.53", "::1"]
    remote = tmp_path / "resolv.conf"
    remote.write_text("nameserver 10.255.255.53\n")
    assert egress.engine_dns_problems(remote) == []  # forwarded from the container: rejected by the chain
    assert not egress.engine_dns_problems(tmp_path / "absent")

