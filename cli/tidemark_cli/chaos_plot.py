"""The picture of a `tidemark chaos --cluster` run: commits/s from zero, p99, and the
healing panel (the fewest healthy segments of any PG), fault and repair windows shaded,
the verdict on the figure. matplotlib is the `plot` extra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cluster_chaos import ClusterRun

SHADES = {"fault": ("tab:red", "fault (until recovery)"), "repair": ("tab:orange", "repair (start to finish)")}


def _windows(events: list[tuple[float, str, str]], start: str, end: str) -> list[tuple[float, float]]:
    out, opened = [], None
    for t, kind, _ in sorted(events):
        if kind == start and opened is None:
            opened = t
        elif kind == end and opened is not None:
            out.append((opened, t))
            opened = None
    if opened is not None:
        out.append((opened, max(t for t, _, _ in events)))
    return out


def plot_cluster_run(run: ClusterRun, result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    progress = result.get("progress") or []
    xs = [p["t"] - run.t0 for p in progress]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(12, 8))
    ax1.plot(xs, [p["window_commits"] for p in progress], color="tab:blue")
    ax1.set_ylim(bottom=0)
    ax1.set_ylabel("commits/s")
    ax2.plot(xs, [p["p99_ms"] for p in progress], color="tab:purple")
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("p99 commit latency (ms)")
    ax3.step([h[0] for h in run.health], [h[1] for h in run.health], where="post", color="tab:green")
    ax3.set_ylim(0, 6.5)
    ax3.set_ylabel("healthy segments\n(worst PG)")
    ax3.set_xlabel("seconds since the start")
    for kind, (start, end) in {"fault": ("fault", "recover"), "repair": ("repair", "repair-done")}.items():
        color, label = SHADES[kind]
        for i, (a, b) in enumerate(_windows(run.events, start, end)):
            for ax in (ax1, ax2, ax3):
                ax.axvspan(a, b, color=color, alpha=0.15, label=label if (i == 0 and ax is ax1) else None)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="lower right", fontsize=8)
    verdict = "OK" if result["ok"] else "FAILED"
    fig.suptitle(f"tidemark chaos --cluster {run.name} {result['experiment']}: {verdict} — "
                 f"{result.get('acked')} acknowledged, {result.get('lost')} lost, healed: {result['healed']}")
    faults = [x for _, k, x in sorted(run.events) if k == "fault"]
    if faults:
        fig.text(0.01, 0.005, "fault: " + "; ".join(faults), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
