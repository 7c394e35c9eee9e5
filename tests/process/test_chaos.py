"""Every `tidemark chaos` experiment, end to end: faults, healing, zero loss, a plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark_playground.chaos import EXPERIMENTS, run_experiment

pytestmark = [pytest.mark.process, pytest.mark.chaos, pytest.mark.rebuild, pytest.mark.timeout(300)]


@pytest.mark.parametrize("index,experiment", list(enumerate(sorted(EXPERIMENTS))))
async def test_experiment_heals_and_loses_nothing(index: int, experiment: str, tmp_path: Path):
    plot = tmp_path / f"{experiment}.png"
    ok = await run_experiment(experiment, tmp_path / "fleet", plot, f"127.0.{120 + index}.10")
    assert ok, f"chaos {experiment} failed: see the timeline above"
    assert plot.stat().st_size > 10_000
