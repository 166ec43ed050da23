"""What the gate's classifier reads: refit it on other features of the same questions and compare the routes.

The gate (andraeus_core/gate.py) is a class-balanced logistic regression on the mean of the question's tokens'
hidden states at six depths of the frozen base model. This bench computes, once per profile and seed, the features
of the gate's own training sample (the same data and 600-per-route sample as ``fit_gate``) and of the profile's
hand-written questions and eval_sets/conversation.jsonl, both as the mean over the tokens and as the last token's
state; then refits the classifier for each variant (pooling x weight decay) and routes the questions with the gate's
own word rules and thresholds. The first variant, ``mean@0.01``, is the gate as shipped and reproduces
bench/gate_routing.py's figures. Tune on the dev: profiles only.

    python bench/gate_features.py --seeds 0,1                      # dev and evaluation profiles, default variants
    python bench/gate_features.py --variants mean@0.01,both@0.005   # pooling: mean, last or both (side by side)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROFILES = "dev:dev_profile,dev:parent_profile,seed_profile,retired_teacher_profile,nursing_student_profile"
VARIANTS = "mean@0.01,mean@0.003,mean@0.1,last@0.01,both@0.01,both@0.005"
KINDS = ("unknown", "known", "unrelated", "general", "conversation")


def pooled_features(model, tokenizer, questions, layers):
    """``(mean, last)``: the mean over each question's tokens and its last token's hidden states at ``layers``."""
    from andraeus_core.gate import question_features

    both = question_features(model, tokenizer, questions, layers, pooling="both")
    half = both.shape[1] // 2
    return both[:, :half], both[:, half:]


def main() -> int:
    from precision import PROFILES as ALL_PROFILES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default=PROFILES, help=f"comma-separated, from {', '.join(ALL_PROFILES)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=VARIANTS, help="POOLING@WEIGHT_DECAY, pooling one of mean, last, both")
    parser.add_argument("--base-model", default="smollm2-135m")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    variants = []
    for v in args.variants.split(","):
        pooling, _, decay = v.partition("@")
        if pooling not in ("mean", "last", "both") or not decay:
            parser.error(f"variant {v!r}: expected POOLING@WEIGHT_DECAY with pooling mean, last or both")
        variants.append((v, pooling, float(decay)))
    names = args.profiles.split(",")
    for name in names:
        if name not in ALL_PROFILES:
            parser.error(f"unknown profile {name!r}; choose from {', '.join(ALL_PROFILES)}")

    import torch
    from gate_routing import CONVERSATION_SET, EXPECTED

    from andraeus_core.config import TrainConfig
    from andraeus_core.evaluate import load_questions
    from andraeus_core.gate import (
        ROUTES,
        THRESHOLD_ABSTAIN,
        THRESHOLD_ABSTAIN_DIRECT,
        THRESHOLD_ABSTAIN_NEAR_MISS,
        THRESHOLD_BASE,
        Gate,
        GateMeta,
        _fit_linear,
        gate_data,
        gate_layers,
        profile_names,
        subject_keywords,
    )
    from andraeus_core.models import load_model
    from andraeus_core.profile import load_profile
    from andraeus_core.recipe import prepare_dataset

    loaded = load_model(args.base_model)
    layers = gate_layers(int(loaded.model.config.num_hidden_layers))
    chat = [q.model_copy(update={"kind": "conversation"}) for q in load_questions(CONVERSATION_SET)]
    counts: dict[tuple[str, str, str], list[int]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            profile_path, questions_path = (ROOT / p for p in ALL_PROFILES[name])
            profile = load_profile(profile_path)
            questions = [*load_questions(questions_path), *chat]
            texts = [q.question for q in questions]
            # As bench/gate_routing.py: the evaluation questions are kept out of the data; no guard answers needed.
            dataset = prepare_dataset(
                profile_path,
                TrainConfig.preset("cpu", seed=seed, base_model=args.base_model),
                guard_answer_fn=lambda qs: ["-"] * len(qs),
                exclude_questions=texts,
            )
            data = gate_data(profile, dataset, seed=seed, exclude_questions=texts)
            rng = random.Random("0\x1fgate")  # fit_gate's own sample
            train = {r: list(dict.fromkeys(data.train.get(r, []))) for r in ROUTES}
            train = {r: rng.sample(qs, 600) if len(qs) > 600 else qs for r, qs in train.items()}
            labels = torch.tensor([i for i, r in enumerate(ROUTES) for _ in train[r]])
            fit_mean, fit_last = pooled_features(
                loaded.model, loaded.tokenizer, [q for r in ROUTES for q in train[r]], layers
            )
            ask_mean, ask_last = pooled_features(loaded.model, loaded.tokenizer, texts, layers)
            keywords = frozenset(subject_keywords(profile.topics(), profile.values()))
            group = "dev" if name.startswith("dev:") else "eval"
            for label, pooling, decay in variants:
                x, asked = {
                    "mean": (fit_mean, ask_mean),
                    "last": (fit_last, ask_last),
                    "both": (torch.cat([fit_mean, fit_last], 1), torch.cat([ask_mean, ask_last], 1)),
                }[pooling]
                mean, std, weight, bias = _fit_linear(x, labels, weight_decay=decay)
                meta = GateMeta(
                    layers=layers,
                    threshold_base=THRESHOLD_BASE,
                    threshold_abstain=THRESHOLD_ABSTAIN,
                    threshold_abstain_near_miss=THRESHOLD_ABSTAIN_NEAR_MISS,
                    threshold_abstain_direct=THRESHOLD_ABSTAIN_DIRECT,
                    train_counts={},
                    heldout_accuracy={},
                    heldout_counts={},
                    fit_seconds=0.0,
                )
                gate = Gate(meta, mean, std, weight, bias, keywords, tuple(profile.topics()), profile_names(profile))
                routes = gate.decide(texts, gate.probabilities(asked))
                for question, route in zip(questions, routes, strict=True):
                    kind = "known" if question.kind in ("paraphrase", "typo", "indirect", "reverse") else question.kind
                    c = counts.setdefault((label, group, kind), [0, 0])
                    c[0] += route == EXPECTED[question.kind]
                    c[1] += 1
            print(f"{name} seed {seed}: features of {len(labels)} + {len(texts)} questions", flush=True)
    groups = [g for g in ("dev", "eval") if any(k[1] == g for k in counts)]
    print(f"\nrouted as expected ({' | '.join(groups)} profiles; seeds {args.seeds})")
    print("| variant | " + " | ".join(KINDS) + " |")
    print("|---" * (len(KINDS) + 1) + "|")
    for label, _, _ in variants:
        cells = [
            " \\| ".join(
                f"{counts[(label, g, k)][0]}/{counts[(label, g, k)][1]}" for g in groups if (label, g, k) in counts
            )
            for k in KINDS
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
