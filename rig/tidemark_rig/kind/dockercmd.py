"""The few docker commands the offline kind path runs, each logged and bounded."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..procs import RigError
from .engine import docker


def run(args: list[str], log: Path, timeout: float = 600, stdin: int | None = None,
        input_bytes: bytes | None = None) -> str:
    """Run `docker ARGS`, appending its output to LOG; return stdout; raise naming the log."""
    with log.open("a") as fh:
        fh.write(f"\n$ docker {' '.join(args)}\n")
        fh.flush()
        try:
            done = subprocess.run([docker(), *args], stdout=subprocess.PIPE, stderr=fh, stdin=stdin,
                                  input=input_bytes, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RigError(f"docker {args[0]} timed out after {timeout:.0f}s; log: {log}") from exc
        out = done.stdout.decode(errors="replace")
        fh.write(out)
    if done.returncode != 0:
        raise RigError(f"docker {' '.join(args[:3])} … failed (exit {done.returncode}); log: {log}")
    return out


def image_exists(tag: str) -> bool:
    done = subprocess.run([docker(), "image", "inspect", tag], capture_output=True, timeout=60)
    return done.returncode == 0


def image_id(tag: str) -> str | None:
    done = subprocess.run([docker(), "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True,
                          text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else None


def tags_like(prefix: str) -> list[str]:
    """Every repo:tag in the engine that starts with PREFIX."""
    repo = prefix.split(":", 1)[0]
    done = subprocess.run([docker(), "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo],
                          capture_output=True, text=True, timeout=60)
    return [t for t in done.stdout.split() if t.startswith(prefix)]


def remove_tag(tag: str, log: Path) -> None:
    """Untag TAG (its layers go once nothing else uses them); a running container keeps it."""
    done = subprocess.run([docker(), "rmi", tag], capture_output=True, text=True, timeout=120)
    with log.open("a") as fh:
        fh.write(f"\n$ docker rmi {tag}: exit {done.returncode} {done.stderr.strip()}\n")


def remove_if_dangling(image_id: str, log: Path) -> None:
    """Remove IMAGE_ID if no tag names it any more (a build of ours it replaced); an
    image still tagged or used by a container stays."""
    done = subprocess.run([docker(), "image", "inspect", "-f", "{{len .RepoTags}}", image_id],
                          capture_output=True, text=True, timeout=60)
    if done.returncode == 0 and done.stdout.strip() == "0":
        subprocess.run([docker(), "rmi", image_id], capture_output=True, timeout=120)
        with log.open("a") as fh:
            fh.write(f"\nremoved the replaced image {image_id}\n")


def build(context: Path, tag: str, log: Path, build_args: dict[str, str] | None = None,
          timeout: float = 1800) -> None:
    # --network none: a build step never needs the network here, and must never use it.
    args = ["build", "--network", "none", "-t", tag]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    run([*args, str(context)], log, timeout=timeout)


def pipe_save_into(tags: list[str], container: str, command: list[str], log: Path,
                   timeout: float = 900) -> None:
    """`docker save TAGS | docker exec -i CONTAINER COMMAND`, both logged, both checked."""
    with log.open("a") as fh:
        fh.write(f"\n$ docker save {' '.join(tags)} | docker exec -i {container} {' '.join(command)}\n")
        fh.flush()
        save = subprocess.Popen([docker(), "save", *tags], stdout=subprocess.PIPE, stderr=fh)
        load = subprocess.Popen([docker(), "exec", "-i", container, *command], stdin=save.stdout,
                                stdout=fh, stderr=fh)
        assert save.stdout is not None
        save.stdout.close()  # so `save` sees a closed pipe if `load` dies
        try:
            load_rc = load.wait(timeout=timeout)
            save_rc = save.wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            save.kill()
            load.kill()
            raise RigError(f"importing {tags} timed out; log: {log}") from exc
    if save_rc != 0 or load_rc != 0:
        raise RigError(f"importing {' '.join(tags)} into {container} failed; log: {log}")
