"""Build the rig's pinned binaries from the Go module proxy into the cache (never the repo).

Idempotent: a binary already at ``bin/NAME-VERSION`` is not rebuilt, so a warm run is a
few ``stat`` calls. Each build runs in a throw-away directory under ``build/`` with its
output logged to ``logs/``; a failure names the step and shows the log's tail.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from . import versions
from .versions import PROGRAMS, bin_dir, bin_path, cache_root, program

KUBE_CMDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Builds that produce more than one binary are grouped so that shared packages compile once.
GROUPS: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd",),
    "kubernetes": KUBE_CMDS,
    "kwok": ("kwok",),
    "minio": ("minio",),
    "mc": ("mc",),
    "helm": ("helm",),
}
# Built only when named with --only (versions.OPTIONAL_PROGRAMS).
OPTIONAL_GROUPS: dict[str, tuple[str, ...]] = {"promtool": ("promtool",)}


def kube_ldflags() -> str:
    """Linker flags that stamp the pinned version into every Kubernetes binary we build."""
    ver = versions.KUBERNETES
    return " ".join([
        "-s -w",
        f"-X k8s.io/component-base/version.gitVersion={ver}",
        "-X k8s.io/component-base/version.gitMajor=1",
        f"-X k8s.io/component-base/version.gitMinor={ver.split('.')[1]}",
        f"-X k8s.io/client-go/pkg/version.gitVersion={ver}",
    ])


class InstallError(RuntimeError):
    """A build step failed; the message names the step and carries the log's tail."""


def find_go() -> str:
    for cand in (os.environ.get("TIDEMARK_GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise InstallError(
        "step 'find go': no Go toolchain found (set TIDEMARK_GO or put go on PATH); "
        "Go >= 1.26 is needed"
    )


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never let the go command download a toolchain: every pin builds with the installed Go.
    env["GOTOOLCHAIN"] = "local"
    env["GOFLAGS"] = "-buildvcs=false -modcacherw"
    env.setdefault("CGO_ENABLED", "0")
    return env


class Installer:
    def __init__(self, console: Console | None = None, nice: int = 10) -> None:
        self.console = console or Console(stderr=True)
        self.nice = nice
        self.root = cache_root()
        self.build_root = self.root / "build"
        self.log_root = self.root / "logs"
        self.go = ""

    # -- helpers -----------------------------------------------------------------------------
    def run_step(self, step: str, args: list[str], cwd: Path, log: Path, timeout: float) -> None:
        """Run one step with its output appended to LOG, showing a live elapsed-time status."""
        cmd = ["nice", "-n", str(self.nice), *args]
        start = time.monotonic()
        with log.open("a") as fh:
            fh.write(f"\n$ (cd {cwd} && {' '.join(args)})\n")
            fh.flush()
            proc = subprocess.Popen(
                cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=go_env()
            )
            with self.console.status(f"  {step} …") as status:
                while proc.poll() is None:
                    elapsed = time.monotonic() - start
                    if elapsed > timeout:
                        proc.kill()
                        proc.wait()
                        raise InstallError(self._failure(step, f"timed out after {timeout:.0f}s", log))
                    status.update(f"  {step} … {elapsed:.0f}s (log: {log})")
                    time.sleep(0.5)
        if proc.returncode != 0:
            raise InstallError(self._failure(step, f"exit status {proc.returncode}", log))
        self.console.print(f"  [green]✓[/] {step} ({time.monotonic() - start:.0f}s)")

    @staticmethod
    def _failure(step: str, why: str, log: Path) -> str:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        return f"step '{step}' failed ({why}); full log: {log}\n--- log tail ---\n{tail}"

    def _publish(self, built: Path, name: str) -> None:
        """Atomically move a built binary to bin/NAME-VERSION and point bin/current/NAME at it."""
        self.publish_to(built, bin_path(name))
        self._link_current(name)

    @staticmethod
    def publish_to(built: Path, dest: Path) -> None:
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.move(built, tmp)  # a move, not a copy: no second 100 MB file left in build/
        tmp.chmod(0o755)
        os.replace(tmp, dest)

    def _link_current(self, name: str) -> None:
        cur = bin_dir() / "current"
        cur.mkdir(parents=True, exist_ok=True)
        link = cur / name
        tmp = cur / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("..") / bin_path(name).name)
        os.replace(tmp, link)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        # Two concurrent install-bins (two terminals, parallel CI steps) must not build twice.
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "install.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- builds ------------------------------------------------------------------------------
    def throwaway_module(self, workdir: Path, module: str, requires: str, imports: list[str],
                          replaces: list[tuple[str, str]]) -> None:
        """Write a module that only requires MODULE, so its own replace directives are ignored."""
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"module tidemark.local/{module}", "", "go 1.26.0", "", f"require {requires}", ""]
        if replaces:
            lines.append("replace (")
            lines += [f"\t{old} => {new}" for old, new in replaces]
            lines.append(")")
        (workdir / "go.mod").write_text("\n".join(lines) + "\n")
        (workdir / "go.sum").unlink(missing_ok=True)
        body = "\n".join(f'\t_ "{imp}"' for imp in imports)
        # The tools build tag keeps `go mod tidy` tracking main packages without importing them.
        (workdir / "tools.go").write_text(
            f"//go:build tools\n\npackage {module}\n\nimport (\n{body}\n)\n"
        )

    def _build_etcd(self, log: Path) -> None:
        prog = PROGRAMS["etcd"]
        work = self.build_root / f"etcd-{prog.version}"
        self.throwaway_module(work, "etcdbuild", f"{prog.module} {prog.version}", [prog.package], [])
        self.run_step("etcd: go mod tidy", [self.go, "mod", "tidy"], work, log, 900)
        self.run_step(
            "etcd: go build",
            [self.go, "build", "-trimpath", "-ldflags", "-s -w", "-o", "out/etcd", prog.package],
            work, log, 1800,
        )
        self._publish(work / "out" / "etcd", "etcd")

    def staging_modules(self, log: Path) -> list[str]:
        """The k8s.io/* modules that the release's go.mod replaces with ./staging paths."""
        work = self.build_root / "kubernetes-modinfo"
        work.mkdir(parents=True, exist_ok=True)
        self.run_step(
            "kubernetes: fetch go.mod",
            [self.go, "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES}"],
            work, log, 900,
        )
        gomod = Path(
            subprocess.run(
                [self.go, "env", "GOMODCACHE"], capture_output=True, text=True, env=go_env(), check=True
            ).stdout.strip()
        ) / f"cache/download/k8s.io/kubernetes/@v/{versions.KUBERNETES}.mod"
        mods = []
        for line in gomod.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
                mods.append(parts[0])
        if not mods:
            raise InstallError(f"step 'kubernetes: read staging modules': none found in {gomod}")
        return mods

    def _build_kubernetes(self, log: Path) -> None:
        ver, staging = versions.KUBERNETES, versions.KUBERNETES_STAGING
        mods = self.staging_modules(log)
        work = self.build_root / f"kubernetes-{ver}"
        pkgs = [PROGRAMS[c].package for c in KUBE_CMDS]
        self.throwaway_module(
            work, "kubebuild", f"k8s.io/kubernetes {ver}", pkgs, [(m, f"{m} {staging}") for m in mods]
        )
        self.run_step("kubernetes: go mod tidy", [self.go, "mod", "tidy"], work, log, 1800)
        ldflags = kube_ldflags()
        # One invocation for all three commands: their many shared packages compile once.
        self.run_step(
            "kubernetes: go build kube-apiserver kube-controller-manager kube-scheduler",
            [self.go, "build", "-trimpath", "-ldflags", ldflags, "-o", "out/", *pkgs],
            work, log, 5400,
        )
        for c in KUBE_CMDS:
            self._publish(work / "out" / c, c)

    def _go_install(self, name: str, log: Path, ldflags: str = "-s -w", tags: str = "") -> None:
        prog = program(name)
        work = self.build_root / f"{name}-{prog.version}"
        gobin = work / "gobin"
        gobin.mkdir(parents=True, exist_ok=True)
        env_cmd = ["env", f"GOBIN={gobin}"]
        self.run_step(
            f"{name}: go install {prog.package}@{prog.version}",
            [*env_cmd, self.go, "install", "-trimpath", "-ldflags", ldflags, *(["-tags", tags] if tags else []),
             f"{prog.package}@{prog.version}"],
            work, log, 3600,
        )
        built = gobin / Path(prog.package).name
        if not built.exists():
            raise InstallError(f"step '{name}: locate binary': {built} not produced; see {log}")
        self._publish(built, name)

    def _build_group(self, group: str, log: Path) -> None:
        if group == "etcd":
            self._build_etcd(log)
        elif group == "kubernetes":
            self._build_kubernetes(log)
        elif group == "helm":
            self._go_install(
                "helm", log, f"-s -w -X helm.sh/helm/v3/internal/version.version={versions.HELM}"
            )
        elif group == "promtool":
            # remove_all_sd: Prometheus' own build tag that leaves out the cloud service
            # discoveries (AWS, Azure, GCE, ... SDKs), which promtool's rule checks and rule
            # tests never use; kubernetes and file SD are imported by promtool itself.
            self._go_install("promtool", log, "-s -w -X github.com/prometheus/common/version.Version="
                             f"{versions.PROMETHEUS_RELEASE}", tags="remove_all_sd")
        else:
            self._go_install(group, log)

    # -- entry point -------------------------------------------------------------------------
    def install(self, only: list[str] | None = None, force: bool = False) -> dict[str, Path]:
        groups = [g for g in GROUPS if not only or g in only or any(n in only for n in GROUPS[g])]
        groups += [g for g in OPTIONAL_GROUPS if only and g in only]
        members = {**GROUPS, **OPTIONAL_GROUPS}
        bin_dir().mkdir(parents=True, exist_ok=True)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self.build_root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with self.lock():
            for i, group in enumerate(groups, 1):
                names = members[group]
                ver = program(names[0]).version
                head = f"[{i}/{len(groups)}] {group} {ver}"
                if not force and all(os.access(bin_path(n), os.X_OK) for n in names):
                    for n in names:
                        self._link_current(n)
                    self.console.print(f"{head}: [green]cached[/] ({', '.join(str(bin_path(n)) for n in names)})")
                    continue
                if not self.go:
                    self.go = find_go()
                self.console.print(f"{head}: building (log: {self.log_root / (group + '.log')})")
                log = self.log_root / f"{group}.log"
                log.write_text(f"# {group} {ver} build started {time.ctime()}\n")
                gstart = time.monotonic()
                self._build_group(group, log)
                self.console.print(f"{head}: [green]done[/] in {time.monotonic() - gstart:.0f}s")
        self.console.print(
            f"all binaries ready in {bin_dir()} (stable links in {bin_dir() / 'current'}); "
            f"{time.monotonic() - t0:.0f}s"
        )
        return {n: bin_path(n) for g in groups for n in members[g]}


def install(only: list[str] | None = None, force: bool = False,
            console: Console | None = None) -> dict[str, Path]:
    return Installer(console).install(only=only, force=force)

