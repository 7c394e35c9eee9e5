"""`kubectl tidemark status` for people: the summary of cluster_view.summarize as rich
tables (pure: a Console in, text out; unit-tested with a recording Console)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from tidemark_protocol.quorum import SEGMENTS_PER_PG, WRITE_QUORUM

STYLE = {"True": "green", "False": "red"}
# conditions whose True is bad news
BAD_WHEN_TRUE = {"Degraded", "Maintenance"}


def _cond_style(c: Mapping[str, Any]) -> str:
    good = (c.get("status") == "True") != (c.get("type") in BAD_WHEN_TRUE)
    if c.get("type") == "Progressing":
        return "yellow" if c.get("status") == "True" else "green"
    return "green" if good else ("yellow" if c.get("type") == "Maintenance" else "red")


def _segments_cell(n: int | None) -> str:
    if n is None:
        return "[dim]?[/]"
    style = "green" if n == SEGMENTS_PER_PG else ("yellow" if n >= WRITE_QUORUM else "red bold")
    return f"[{style}]{n}/{SEGMENTS_PER_PG}[/]"


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for c in columns:
        t.add_column(c)
    return t


def render_header(console: Console, s: Mapping[str, Any]) -> None:
    health = "[green]healthy[/]" if s["healthy"] else "[red]not healthy[/]"
    console.print(f"[bold]AuroraCluster {s['namespace']}/{s['name']}[/]  phase [bold]{s['phase']}[/]  {health}"
                  + ("  [yellow bold]MAINTENANCE: new rebuilds paused[/]" if s["maintenance"] else ""))
    console.print(f"zones {', '.join(s['zones']) or '-'}   nodes {s['ready_nodes'] or '-'}   "
                  f"full PGs {s['healthy_pgs'] or '-'}   writable PGs {s['writable_pgs'] if s['writable_pgs'] is not None else '-'}"
                  f"   VDL {s['vdl'] if s['vdl'] is not None else '-'}")
    for p in s["problems"]:
        console.print(f"[red]! {p}[/]")


def render_conditions(console: Console, conditions: Sequence[Mapping[str, Any]]) -> None:
    t = _table("Conditions", "TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
    for c in conditions:
        st = _cond_style(c)
        t.add_row(c["type"], f"[{st}]{c['status']}[/]", c.get("reason") or "", c.get("since") or "",
                  c.get("message") or "")
    console.print(t)


def render_nodes(console: Console, nodes: Sequence[Mapping[str, Any]]) -> None:
    t = _table("Storage nodes", "POD", "ZONE", "NODE", "PHASE", "ANSWERING", "RESTARTS", "PGS")
    for n in nodes:
        ans = "[green]yes[/]" if n["answering"] else "[red]no[/]"
        t.add_row(n["name"], n["zone"], n["node"] or "-", n["phase"] or "-", ans, str(n["restarts"]),
                  ",".join(str(pg) for pg in n["pgs"]) or "-")
    console.print(t)


def render_pgs(console: Console, pgs: Sequence[Mapping[str, Any]]) -> None:
    t = _table("Protection groups", "PG", "HEALTHY", "EPOCH", "MEMBERS")
    for p in pgs:
        members = " ".join(p["members"])
        if p["next_members"] is not None:
            new = sorted(set(p["next_members"]) - set(p["members"]))
            members += f"  [yellow](+ {' '.join(new)})[/]"
        t.add_row(str(p["id"]), _segments_cell(p["healthy_segments"]), str(p["epoch"]), members)
    console.print(t)


def render_repairs(console: Console, s: Mapping[str, Any]) -> None:
    if not s["repairs"] and not s["repairing"]:
        console.print("[bold]Repairs[/]  none in flight")
        return
    t = _table("Repairs", "PG", "LOST", "NEW", "STATE", "PROGRESS")
    for r in s["repairs"]:
        total = r.get("total_bytes") or 0
        size = f" ({r.get('bytes') or 0}/{total} bytes)" if total else ""
        t.add_row(str(r["pg"]), r["from"] or "-", r["to"], r["state"], f"{float(r.get('pct') or 0):.0f}%{size}")
    console.print(t)
    if s["repairing"]:
        console.print(f"  [dim]{s['repairing']}[/]")


def render_backup(console: Console, s: Mapping[str, Any]) -> None:
    b = s["backup"]
    if not b:
        console.print("[bold]Backup[/]  not enabled")
        return
    ok = {True: "[green]healthy[/]", False: "[red]not healthy[/]", None: "[dim]unknown[/]"}[s["backup_healthy"]]
    console.print(f"[bold]Backup[/]  {b.get('target', '')}  {ok}")
    console.print(f"  window {b.get('firstRecoverableTime', '-')} .. {b.get('latestRestorableTime', '-')}"
                  f"   last upload {b.get('lastSuccessfulUpload', '-')}   retention {b.get('retentionDays', '-')} d")
    if b.get("lastError"):
        console.print(f"  [red]last error: {b['lastError']}[/]")


def render_instances(console: Console, s: Mapping[str, Any]) -> None:
    if not s["instances"] and not s["ready_instances"]:
        console.print("[bold]Instances[/]  none")
        return
    t = _table(f"Instances {s['ready_instances'] or ''}  primary {s['current_primary'] or '-'}",
               "NAME", "ROLE", "SERVING", "LAG", "NODE")
    for i in s["instances"]:
        lag = "-" if i["lag_ms"] is None else f"{i['lag_ms']} ms"
        role = i["role"] + (" (primary)" if i["name"] == s["current_primary"] else "")
        t.add_row(i["name"], role, "[green]yes[/]" if i["serving"] else "[red]no[/]", lag, i["node"] or "-")
    console.print(t)


def render_events(console: Console, events: Sequence[Mapping[str, Any]]) -> None:
    t = _table("Recent events", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")
    for e in events:
        style = "yellow" if e["type"] == "Warning" else ""
        t.add_row(e["last_seen"] or "", f"[{style}]{e['type']}[/]" if style else e["type"] or "",
                  e["reason"] or "", e["object"] or "", e["message"])
    console.print(t)


def render_status(console: Console, s: Mapping[str, Any]) -> None:
    render_header(console, s)
    for part in (lambda: render_conditions(console, s["conditions"]),
                 lambda: render_nodes(console, s["storage_nodes"]),
                 lambda: render_pgs(console, s["pgs"]),
                 lambda: render_repairs(console, s),
                 lambda: render_backup(console, s),
                 lambda: render_instances(console, s),
                 lambda: render_events(console, s["events"])):
        console.print()
        part()
