"""The egress guard: no container or kind node may send traffic off this machine.

Containers may talk to each other and to this machine only. One chain,
TIDEMARK-EGRESS, is jumped to first from Docker's DOCKER-USER chain (IPv4) and from
FORWARD (IPv6): a packet going into a container bridge passes, a packet coming out of
one for any other interface is rejected. It is installed after the engine starts (the
engine creates DOCKER-USER) and before any container, build or kind node runs; tests
check it is there, they never probe it by sending traffic out.

DNS: Docker's embedded resolver forwards a container's query from the container's own
network namespace, so this chain rejects it, unless the upstream is a loopback
address (systemd-resolved's 127.0.0.53, say): dockerd then sends it from the host's
namespace, past any FORWARD rule. An engine we start is therefore given DNS_SINK as its
only upstream; an engine found running with a loopback upstream is reported.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import psutil

from ..procs import RigError

CHAIN = "TIDEMARK-EGRESS"
BRIDGES = ("docker0", "br-+")  # Docker's default bridge and every user network (kind's)
# Rules in order, after `-A CHAIN`.
RULES: tuple[tuple[str, ...], ...] = (
    *(("-o", b, "-j", "RETURN") for b in BRIDGES),
    *(("-i", b, "-j", "REJECT") for b in BRIDGES),
)
# RFC 5737 TEST-NET-1, never routed: a query sent there leaves through a container bridge
# and is rejected here (measured: 4 UDP/53 packets rejected, none through OUTPUT).
DNS_SINK = "192.0.2.53"
RESOLV_CONF = Path("/etc/resolv.conf")
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
    return problems + engine_dns_problems()


def loopback_resolvers(resolv_conf: str) -> list[str]:
    """The loopback nameservers of a resolv.conf text (the ones dockerd dials itself)."""
    found = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                if ipaddress.ip_address(parts[1].split("%")[0]).is_loopback:
                    found.append(parts[1])
            except ValueError:
                continue
    return found


def engine_dns_problems(resolv_conf: Path = RESOLV_CONF) -> list[str]:
    """A running dockerd without its own --dns forwards containers' queries to a loopback
    host resolver from the host's namespace: past the guard."""
    loopback = loopback_resolvers(resolv_conf.read_text()) if resolv_conf.exists() else []
    if not loopback:
        return []
    problems = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "dockerd" and "--dns" not in (proc.info["cmdline"] or []):
            problems.append(f"dockerd (pid {proc.pid}) forwards containers' DNS to the host's loopback "
                            f"resolver {loopback[0]}, past the guard: restart it with --dns {DNS_SINK}")
    return problems
