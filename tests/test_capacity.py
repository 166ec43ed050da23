"""bench/capacity.py: the committed capacity profile is what its generator writes, prefixes nest, and a quick run
trains, evaluates and times a grid point, then reports it (table, chart) without training again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from andraeus_core.errors import EvaluationError
from andraeus_core.plots import line_chart
from andraeus_core.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import capacity  # noqa: E402  (bench/ is not a package)


def test_the_committed_profile_is_the_generators_output(tmp_path: Path) -> None:
    # Runs are repeatable only if the file is what --write-profile writes (seeded), not hand-edited.
    fresh = capacity.write_profile(tmp_path / "p.yaml")
    assert fresh.read_text(encoding="utf-8") == capacity.PROFILE.read_text(encoding="utf-8")
    profile = load_profile(capacity.PROFILE)
    assert len(profile.facts) == 200
    values = [f.value.lower() for f in profile.facts]
    assert len(set(values)) == 200  # a miss is never scored right by another fact's value
    assert len({f.topic for f in profile.facts}) == 200


def test_smaller_profiles_are_prefixes_of_larger_ones() -> None:
    small, large = capacity.capacity_profile(10), capacity.capacity_profile(50)
    assert [f.topic for f in large.facts[:10]] == [f.topic for f in small.facts]
    with pytest.raises(SystemExit, match="--facts must be 1..200"):
        capacity.capacity_profile(201)


def test_relatives_names_match_the_relation() -> None:
    facts = {f.topic: f.value for f in load_profile(capacity.PROFILE).facts}
    for topic, value in facts.items():
        relation = topic.removesuffix("'s name")
        if relation in capacity._FEMALE:
            assert value in capacity._FEMALE_NAMES, (topic, value)
        if relation in capacity._MALE:
            assert value in capacity._MALE_NAMES, (topic, value)


def test_line_chart_writes_a_png_and_refuses_nothing_to_plot(tmp_path: Path) -> None:
    out = line_chart({"r=16": [(10, 0.9), (50, 0.8)], "r=64": [(10, 0.95)]}, tmp_path / "c.png", log_x=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EvaluationError, match="Nothing to plot"):
        line_chart({"r=16": []}, tmp_path / "d.png")


def test_capacity_bench_quick_run_then_report(tmp_path: Path) -> None:
    work = tmp_path / "w"
    cmd = [sys.executable, "bench/capacity.py", "--quick", "--facts", "3", "--ranks", "4", "--workdir", str(work)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((work / "facts3-r4.json").read_text())
    assert result["facts"] == 3 and result["rank"] == 4
    assert result["train_s"] > 0 and result["tokens_trained"] > 0 and result["train_peak_rss_mb"] > 0
    # The first run of a fresh bench home has only the default guess; the run then calibrates the cache.
    assert result["estimate_default"]["calibrated"] is False
    assert result["estimate_calibrated"]["calibrated"] is False
    assert (work / "home" / "cache" / "throughput.json").exists()
    gated = result["heldout"]["gated"]
    assert gated["recall"][1] == 3  # one held-out phrasing per fact in --quick
    assert gated["unknown"][1] > 0 and gated["unrelated"][1] > 0  # the guard items are all kept
    assert result["eval_both_baselines"]["n"] > 0
    assert "| 3 | 4 |" in run.stdout and (work / "capacity.png").exists()

    again = subprocess.run(
        [sys.executable, "bench/capacity.py", "--report", "--workdir", str(work)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "| 3 | 4 |" in again.stdout and "training and evaluating" not in again.stdout
