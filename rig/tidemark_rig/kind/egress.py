"""The egress guard: no container or kind node may send traffic off this machine.

Containers may talk to each other and to this machine only. One chain,
TIDEMARK-EGRESS, is jumped to first from Docker's DOCKER-USER chain (IPv4) and from
FORWARD (IPv6): a packet going into a container bridge passes, a packet coming out of
one for any other interface is rejected. It is installed after the engine starts (the
engine creates DOCKER-USER) and before any container, build or kind node runs; tests
check it is there, they never probe it by sending traffic out.
"""

from __future__ import annotations

import shutil
import subprocess

from ..procs import RigError

CHAIN = "TIDEMARK-EGRESS"
BRIDGES = ("docker0", "br-+")  # Docker's default bridge and every user network (kind's)
# Rules in order, after `-A CHAIN`.
RULES: tuple[tuple[str, ...], ...] = (
    *(("-o", b, "-j", "RETURN") for b in BRIDGES),
    *(("-i", b, "-j", "REJECT") for b in BRIDGES),
)
# (tool, the chain that jumps to ours)
TABLES = (("iptables", "DOCKER-USER"), ("ip6tables", "FORWARD"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RigError(f"{name} not found: the egress guard needs it (apt-get install iptables)")
    return path


def _run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([_tool(tool), "-w", "10", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RigError(f"egress guard: {tool} {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _rules(tool: str) -> list[str]:
    done = _run(tool, "-S", CHAIN, check=False)
    return done.stdout.splitlines() if done.returncode == 0 else []


def _expected() -> list[str]:
    return [f"-N {CHAIN}", *(f"-A {CHAIN} {' '.join(r)}" for r in RULES)]


def _normalized(lines: list[str]) -> list[str]:
    # iptables prints REJECT with its default `--reject-with`; compare on what we set.
    return [line.split(" --reject-with")[0] for line in lines]


def install_guard() -> None:
    """Create or repair the chain and its jump; idempotent."""
    for tool, parent in TABLES:
        if _normalized(_rules(tool)) != _expected():
            _run(tool, "-N", CHAIN, check=False)
            _run(tool, "-F", CHAIN)
            for rule in RULES:
                _run(tool, "-A", CHAIN, *rule)
        if _run(tool, "-C", parent, "-j", CHAIN, check=False).returncode != 0:
            _run(tool, "-I", parent, "1", "-j", CHAIN)


def guard_problems() -> list[str]:
    """What is missing from the guard (empty when it is fully in place)."""
    problems = []
    for tool, parent in TABLES:
        if _normalized(_rules(tool)) != _expected():
            problems.append(f"{tool}: chain {CHAIN} missing or altered")
        first = _run(tool, "-S", parent, check=False).stdout.splitlines()
        jumps = [line for line in first if line.startswith("-A ")]
        if not jumps or jumps[0] != f"-A {parent} -j {CHAIN}":
            problems.append(f"{tool}: {parent} does not jump to {CHAIN} first")
    return problems
