"""The gate's routing alone, in seconds per profile: fit the gate as training does (no adapter is trained: the gate
reads questions through the frozen base model) and route every question of the profile's hand-written set, and the
30 conversational messages of eval_sets/conversation.jsonl ("Hey there!", "Thanks so much!"), which belong to the base
model whatever the profile.

What it measures is where each question goes, not the answer: a known fact routed to the adapter may still be
answered wrongly, and an unknown routed to the adapter may still be declined by it (bench/precision.py measures the
answers). Use it to try a gate change on every profile in a minute; tune on the dev: profiles only.

    python bench/gate_routing.py                                   # the three evaluation profiles
    python bench/gate_routing.py --profiles dev:dev_profile,dev:parent_profile --show
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: The route each kind of question should take.
EXPECTED = {
    "paraphrase": "adapter",
    "typo": "adapter",
    "indirect": "adapter",
    "reverse": "adapter",
    "unknown": "abstain",
    "unrelated": "base",
    "general": "base",
    "conversation": "base",  # eval_sets/conversation.jsonl, asked of every profile
}
CONVERSATION_SET = ROOT / "eval_sets" / "conversation.jsonl"


def main() -> int:
    from precision import DEFAULT_PROFILES, PROFILES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default=DEFAULT_PROFILES, help=f"comma-separated, from {', '.join(PROFILES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--show", action="store_true", help="print every misrouted question")
    parser.add_argument(
        "--pooling", choices=("mean", "both"), default="both", help="the gate's features (fit_gate's default: both)"
    )
    parser.add_argument(
        "--dump", type=Path, help="write each question's route probabilities to this JSONL file (to study thresholds)"
    )
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from andraeus_core.config import TrainConfig
    from andraeus_core.evaluate import load_questions
    from andraeus_core.gate import ROUTES, fit_gate, gate_data, names_known_subject, question_features
    from andraeus_core.models import load_model
    from andraeus_core.profile import load_profile
    from andraeus_core.recipe import prepare_dataset

    loaded = load_model(args.base_model)
    total: dict[str, list[int]] = {}
    records: list[dict[str, object]] = []
    for name in args.profiles.split(","):
        if name not in PROFILES:
            parser.error(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
        profile_path, questions_path = (ROOT / p for p in PROFILES[name])
        profile = load_profile(profile_path)
        questions = load_questions(questions_path)
        # As bench/precision.py trains: the evaluation questions are kept out. The guard answers do not matter to
        # the gate (it reads questions only), so none are generated.
        dataset = prepare_dataset(
            profile_path,
            TrainConfig.preset("cpu", seed=args.seed, base_model=args.base_model),
            guard_answer_fn=lambda qs: ["-"] * len(qs),
            exclude_questions=[q.question for q in questions],
        )
        chat = [q.model_copy(update={"kind": "conversation"}) for q in load_questions(CONVERSATION_SET)]
        unseen = [q.question for q in [*questions, *chat]]
        data = gate_data(profile, dataset, seed=args.seed, exclude_questions=unseen)
        gate = fit_gate(loaded.model, loaded.tokenizer, data, profile, pooling=args.pooling)
        pairs = [(q.kind, q.question) for q in [*questions, *chat]]
        if args.dump:
            # The generated held-out split too (never fitted on, not counted): a threshold tried on the dump sees
            # every known phrasing kind ("heldout-adapter" holds the reversed and identity questions as well).
            pairs += [(f"heldout-{r}", q) for r in ROUTES for q in dict.fromkeys(data.heldout.get(r, []))]
        texts = [q for _, q in pairs]
        layers, pooling = gate.meta.layers, gate.meta.pooling
        features = question_features(loaded.model, loaded.tokenizer, texts, layers, pooling=pooling)
        probabilities = gate.probabilities(features)
        routes = gate.decide(texts, probabilities)
        counts: dict[str, list[int]] = {}
        for (kind, question), route, p in zip(pairs, routes, probabilities.tolist(), strict=True):
            records.append(
                {
                    "profile": name,
                    "kind": kind,
                    "question": question,
                    "route": route,
                    "p": dict(zip(ROUTES, (round(x, 4) for x in p), strict=True)),
                    "names_known_subject": names_known_subject(question, gate.keywords),
                    "near_miss": gate.near_miss(question),
                }
            )
            if kind.startswith("heldout-"):
                continue
            ok = route == EXPECTED.get(kind)
            for table in (counts, total):
                c = table.setdefault(kind, [0, 0])
                c[0] += ok
                c[1] += 1
            if args.show and not ok:
                print(f"   {name}: {kind} -> {route}: {question}")
        shown = ", ".join(f"{k} {a}/{n}" for k, (a, n) in counts.items())
        print(f"{name}: gate held-out {gate.meta.heldout_accuracy}; routed as expected: {shown}", flush=True)
    print("TOTAL routed as expected: " + ", ".join(f"{k} {a}/{n} ({a / n:.0%})" for k, (a, n) in total.items()))
    if args.dump:
        args.dump.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
