"""Family profiles: per-person recall, cross-person leakage, private-fact disclosure, third-person recall, and the
training time against a one-person profile with the same number of facts, trained in the same run.

The family is ``examples/family_profile.yaml`` (3 people x 8 facts + 4 shared, 5 private); the reference is the same
28 facts told by one person (Nadia: her own as "my ...", Karim's as "my husband's ...", Leila's as "my daughter's
...", the shared ones as they are). Both train with the cpu preset and the same seed. The family adapter is then
evaluated on its hand-written set (``eval_sets/family_profile.jsonl``, never trained on) and on its held-out split.

    python bench/family.py                     # ~25-40 min on 2 cores
    python bench/family.py --reuse             # evaluate adapters trained by an earlier run (times from that run)
    python bench/family.py --quick             # smoke run on tiny-random (figures meaningless)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILY = ROOT / "examples/family_profile.yaml"
EVAL_SET = ROOT / "eval_sets/family_profile.jsonl"
GOALS = {
    "per-person recall": (0.93, True),
    "cross-person leakage": (0.02, False),
    "private disclosure": (0.0, False),
    "third-person recall": (0.85, True),
    "training time ratio": (1.5, False),
}


def reference_profile() -> object:
    """The family's 28 facts as one person's profile (same facts, same count)."""
    from andraeus_core.profile import Fact, Profile, load_profile

    family = load_profile(FAMILY)
    prefix = {"Nadia": "", "Karim": "husband's ", "Leila": "daughter's "}
    facts = [
        Fact(topic=prefix.get(f.owner or "", "") + f.topic, value=f.value, aliases=f.aliases) for f in family.facts
    ]
    return Profile(user_name="Nadia", facts=facts)


def _unseen() -> list[str]:
    """The evaluation set's questions: never trained on."""
    return [json.loads(line)["question"] for line in EVAL_SET.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_both(workdir: Path, seed: int, base_model: str, quick: bool, reference: bool = True) -> dict:
    from andraeus_core.config import TrainConfig
    from andraeus_core.train import train

    overrides: dict = {"seed": seed, "base_model": base_model}
    if quick:
        overrides.update(epochs=1, per_fact=6)
    out: dict = {}
    runs = [("reference", reference_profile())] if reference else []
    for name, source in (*runs, ("family", FAMILY)):
        start = time.perf_counter()
        adapter = train(
            source,
            TrainConfig.preset("cpu", **overrides),
            out_dir=workdir / f"{name}-seed{seed}",
            exclude_questions=_unseen(),
        )
        out[name] = {
            "train_s": round(time.perf_counter() - start, 1),
            "train_examples": adapter.meta.dataset.get("train"),
            "adapter": str(adapter.path),
        }
        print(f"trained {name}: {out[name]['train_s']} s, {out[name]['train_examples']} examples", flush=True)
    if reference:
        out["ratio"] = round(out["family"]["train_s"] / out["reference"]["train_s"], 2)
    return out


def _pct(c: int, n: int) -> str:
    return f"{100 * c / n:.1f}% ({c}/{n})" if n else "—"


def evaluate_family(adapter_dir: str, quick: bool) -> dict:
    from andraeus_core.evaluate import evaluate

    out: dict = {}
    for name, questions in (("evalset", EVAL_SET), ("heldout", None)):
        t = time.perf_counter()
        report = evaluate(adapter_dir, questions, baselines=("base",), max_new_tokens=32 if quick else 48)
        data = report.to_json()
        out[name] = {"seconds": round(time.perf_counter() - t, 1), "family": data.get("family")}
        out[name]["by_kind"] = {k: v for k, v in data["by_kind"].items()}
        out[name]["abstention_rate"] = data["abstention_rate"]
        out[name]["over_trigger_rate"] = data["over_trigger_rate"]
        out[name]["retention"] = data["retention"]
        print(report.table(), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/andraeus-bench-family"))
    parser.add_argument("--reuse", action="store_true", help="evaluate the adapters of an earlier run in --workdir")
    parser.add_argument("--train-only", action="store_true", help="train (and time) both, evaluate nothing")
    parser.add_argument(
        "--no-reference", action="store_true", help="train the family only (no time ratio: for more seeds)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny-random smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    base_model = "tiny-random" if args.quick else "smollm2-135m"
    args.workdir.mkdir(parents=True, exist_ok=True)
    record = args.workdir / f"train-seed{args.seed}.json"
    if args.reuse and record.exists():
        trained = json.loads(record.read_text())
        print(f"reusing adapters trained earlier ({record})", flush=True)
    else:
        trained = train_both(args.workdir, args.seed, base_model, args.quick, reference=not args.no_reference)
        record.write_text(json.dumps(trained, indent=2))
    if "reference" in trained:
        print(
            f"training time: family {trained['family']['train_s']} s ({trained['family']['train_examples']} "
            f"examples) vs one person with the same 28 facts {trained['reference']['train_s']} s "
            f"({trained['reference']['train_examples']} examples): {trained['ratio']}x (goal <= 1.5x)",
            flush=True,
        )
    result = {"trained": trained}
    if not args.train_only:
        result["eval"] = evaluate_family(trained["family"]["adapter"], args.quick)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
