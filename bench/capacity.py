"""Capacity: how training time, memory, held-out recall and precision grow from 10 to 200 facts, per LoRA rank —
and whether the estimate shown before training holds.

The profile is ``bench/data/capacity_profile.yaml``: 200 natural facts about one person (relatives' and friends'
names, birthdays, jobs and home towns; favourites; pets; everyday numbers and places), generated once from topic and
value pools by ``--write-profile`` (seeded: the file is committed, so runs are repeatable). A run with N facts takes
the first N, so the 10-fact profile is inside the 25-fact one, and so on.

Each (facts, rank) run is a child process (its own peak RSS, a fresh model): the cpu preset with ``lora_r`` set
(alpha = 2r, the seed's ratio), seed 0. Before training it records the estimate both ways — the default guess (an
empty throughput cache, what a first-time user sees) and the calibrated one (the throughput measured by this bench's
earlier runs on this machine) — then trains, and evaluates the adapter (with its gate, as chat serves it) on a
sample of its held-out split: up to 4 phrasings per fact plus every guard item (unknown topics, near-topic
requests), never trained on. A separate timing evaluates 64 held-out questions with both baselines (base model,
in-context facts list), the evaluation a user runs with ``andraeus eval``.

    python bench/capacity.py                           # 10/25/50 facts x r16/r64, then 100 and 200 at r64 (hours)
    python bench/capacity.py --facts 10 50 --ranks 64  # a subset; results accumulate in --workdir
    python bench/capacity.py --report                  # print the table and redraw the chart from earlier runs
    python bench/capacity.py --quick                   # smoke run on tiny-random (figures meaningless)
    python bench/capacity.py --write-profile           # regenerate bench/data/capacity_profile.yaml (seeded)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PROFILE = ROOT / "bench/data/capacity_profile.yaml"
DEFAULT_FACTS = (10, 25, 50)
DEFAULT_RANKS = (16, 64)
LARGE_FACTS = (100, 200)  # at r=64 only, after the grid
HELDOUT_PER_FACT = 4
TIMED_EVAL_QUESTIONS = 64

# ----------------------------------------------------------------------------------------------------------------
# The profile: natural facts from topic and value pools

_FEMALE_NAMES = (
    "Maya Priya Sofia Aisha Yuki Chloe Amara Ingrid Zara Leah Nora Hannah Clara Elena Freya Iris Mila Beatrice "
    "Lena Rosa Greta Esme Alice Ruth Nina Paula Anya Julia Selma Wren Lottie Mira Daphne Cora Fatima Hazel Olive "
    "Talia Vera Luz Pippa Ada Marta Edith Yara Inez Dora"
).split()
_MALE_NAMES = (
    "Noah Liam Mateo Ethan Omar Lucas Felix Rafael Tomas Kenji Diego Idris Marcus Jonah Samir Victor Arjun Hugo Caleb "
    "Tariq Malik Bruno Dev Oscar Kofi Theo Ravi Emil Pedro Ahmed Jasper Leon Sanjay Milo Quentin Kai Nikolai Rohan "
    "Gideon Anton Imran Silas Joaquin Benedict Ansel Cyrus Levi"
).split()
_FEMALE = {"mother", "sister", "daughter", "grandmother", "aunt", "niece", "mother-in-law"}
_MALE = {"father", "brother", "son", "grandfather", "uncle", "nephew", "godson"}
_SURNAMES = "Okafor Lindqvist Moreau Tanaka Brennan Castillo Novak Haddad Fischer Osei Kowalski Ferreira".split()
_CITIES = (
    "Lisbon",
    "Denver",
    "Osaka",
    "Leeds",
    "Valencia",
    "Krakow",
    "Austin",
    "Nairobi",
    "Porto",
    "Halifax",
    "Seville",
    "Bergen",
    "Tucson",
    "Lyon",
    "Adelaide",
    "Galway",
    "Bologna",
    "Quebec City",
    "Bristol",
    "Tampere",
    "Savannah",
    "Ghent",
    "Cusco",
    "Hobart",
    "Utrecht",
    "Boise",
    "Malaga",
    "Dundee",
    "Graz",
    "Santa Fe",
)
_JOBS = (
    "nurse",
    "electrician",
    "architect",
    "pharmacist",
    "bus driver",
    "accountant",
    "chef",
    "librarian",
    "physiotherapist",
    "carpenter",
    "marine biologist",
    "dentist",
    "paramedic",
    "graphic designer",
    "plumber",
    "air traffic controller",
    "veterinarian",
    "translator",
    "welder",
    "primary school teacher",
    "florist",
    "civil engineer",
    "baker",
    "data analyst",
    "midwife",
    "firefighter",
    "tailor",
    "surveyor",
    "optician",
    "pilot",
)
_FOODS = (
    "lasagne",
    "pad thai",
    "ramen",
    "paella",
    "fish tacos",
    "moussaka",
    "pierogi",
    "jollof rice",
    "bibimbap",
    "shepherd's pie",
    "falafel",
    "risotto",
    "pho",
    "goulash",
    "dumplings",
    "enchiladas",
    "biryani",
    "gnocchi",
    "chicken curry",
    "ceviche",
    "pancakes",
    "mac and cheese",
    "sushi",
    "borscht",
    "couscous",
    "tagine",
    "laksa",
    "fish and chips",
    "katsu curry",
    "spanakopita",
    "beef stew",
)
_MONTHS = "January February March April May June July August September October November December".split()
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

#: (topic, value pool). Pools named "@..." are the shared ones above, drawn without replacement so that no two facts
#: share a value (a recall miss must not be scored right by another fact's value).
_RELATIONS = (
    "partner",
    "mother",
    "father",
    "sister",
    "brother",
    "daughter",
    "son",
    "best friend",
    "boss",
    "grandmother",
    "grandfather",
    "aunt",
    "uncle",
    "cousin",
    "niece",
    "nephew",
    "neighbour",
    "dentist",
    "doctor",
    "roommate",
    "mentor",
    "landlord",
    "coworker",
    "therapist",
    "piano teacher",
    "mother-in-law",
    "godson",
    "personal trainer",
)
_RELATION_ATTRIBUTES = ("name", "birthday", "job", "home city", "favourite food")
_FAVOURITES = {
    "favourite colour": ("teal", "mustard yellow", "burgundy", "lavender", "forest green", "coral"),
    "favourite band": ("Fleetwood Mac", "Radiohead", "ABBA", "The Cure", "Daft Punk", "Arctic Monkeys"),
    "favourite movie": ("Spirited Away", "The Godfather", "Amelie", "Paddington 2", "Alien", "Casablanca"),
    "favourite book": ("Middlemarch", "The Hobbit", "Beloved", "Dune", "Persuasion", "The Overstory"),
    "favourite song": ("Dancing Queen", "Clair de Lune", "Hallelujah", "Heroes", "Jolene", "Yellow"),
    "favourite sport": ("badminton", "rugby", "climbing", "volleyball", "fencing", "table tennis"),
    "favourite football team": ("Celtic", "Ajax", "Boca Juniors", "Everton", "Napoli", "Benfica"),
    "favourite season": ("autumn", "spring", "winter", "summer"),
    "favourite dessert": ("tiramisu", "baklava", "creme brulee", "cheesecake", "apple crumble", "mochi"),
    "favourite fruit": ("mango", "lychee", "pomegranate", "kiwi", "fig", "persimmon"),
    "favourite restaurant": ("Casa Lola", "The Green Fig", "Sakura House", "Luigi's", "Blue Door Bistro"),
    "favourite flower": ("peony", "tulip", "sunflower", "orchid", "lilac", "ranunculus"),
    "favourite podcast": ("Radiolab", "The Daily", "Hidden Brain", "No Such Thing as a Fish", "99% Invisible"),
    "favourite drink": ("oat flat white", "ginger beer", "chai latte", "hibiscus tea", "lemonade"),
    "favourite TV show": ("Bluey", "The Bear", "Succession", "Parks and Recreation", "Derry Girls"),
    "favourite animal": ("otter", "red panda", "owl", "octopus", "capybara", "fox"),
    "favourite board game": ("Catan", "Ticket to Ride", "Scrabble", "Carcassonne", "Wingspan"),
    "favourite painter": ("Frida Kahlo", "Hokusai", "Vermeer", "Monet", "Hilma af Klint"),
    "favourite holiday destination": ("Crete", "the Dolomites", "Kyoto", "the Scottish Highlands", "Madeira"),
    "favourite cheese": ("manchego", "gruyere", "halloumi", "stilton", "comte"),
}
_SELF = {
    "birthday": ("@date",),
    "home city": ("@city",),
    "hometown": ("@city",),
    "job": ("@job",),
    "employer": ("Cedar Labs", "Northwind Health", "Brightwater Council", "Atlas Freight", "Juniper Books"),
    "school": ("Riverside High", "St Anne's Academy", "Hillcrest School", "Oakwood College"),
    "university": ("University of Leeds", "McGill", "Trinity College Dublin", "University of Porto"),
    "car": ("Subaru Outback", "Toyota Corolla", "blue Volvo V60", "Honda Jazz", "Skoda Octavia"),
    "hobby": ("pottery", "birdwatching", "bouldering", "knitting", "sourdough baking", "chess"),
    "allergy": ("peanuts", "penicillin", "cats", "shellfish", "pollen"),
    "middle name": ("@name",),
    "nickname": ("Bean", "Sunny", "Moose", "Pip", "Ziggy"),
    "native language": ("Portuguese", "Polish", "Tagalog", "Dutch", "Swahili", "Korean"),
    "blood type": ("O positive", "A negative", "B positive", "AB positive"),
    "eye colour": ("hazel", "grey", "green", "brown"),
    "shoe size": ("42", "38", "9.5", "44"),
    "height": ("1.78 m", "5 foot 6", "1.62 m", "6 foot 1"),
    "gym": ("PureGym Holloway", "Anytime Fitness on Elm Street", "the YMCA on Kent Road", "Clifton Leisure Centre"),
    "phone model": ("Pixel 8", "iPhone 13 mini", "Fairphone 5", "Galaxy S23"),
    "street": ("Maple Avenue", "Harbour Road", "Quarry Lane", "Juniper Close"),
    "degree": ("biochemistry", "history of art", "mechanical engineering", "linguistics", "economics"),
    "star sign": ("Scorpio", "Gemini", "Capricorn", "Libra", "Pisces"),
    "lucky number": ("7", "13", "21", "4"),
    "wedding anniversary": ("@date",),
    "locker number": ("318", "52", "1047", "86"),
    "bank": ("Monzo", "Nationwide", "ING", "Triodos"),
    "dentist appointment": ("@date",),
    "commute": ("the 73 bus", "cycling along the canal", "the Northern line", "a 20-minute walk"),
    "first concert": ("Oasis at Knebworth", "Beyonce in 2016", "Coldplay in Lisbon", "Metallica in Oslo"),
    "wifi network name": ("PrettyFlyForAWifi", "Hogwarts-5G", "TheLANBeforeTime", "Casa-Guest"),
}
_PETS = {
    "dog's name": ("@name",),
    "cat's name": ("@name",),
    "dog's breed": ("border collie", "dachshund", "Labrador", "whippet", "Shiba Inu"),
    "cat's breed": ("Maine Coon", "Siamese", "British Shorthair", "Ragdoll"),
    "dog's age": ("3", "7", "11", "5"),
    "horse's name": ("@name",),
    "parrot's name": ("@name",),
    "goldfish's name": ("@name",),
    "rabbit's name": ("@name",),
    "tortoise's name": ("@name",),
    "vet's name": ("@name",),
}


def _date(rng: random.Random) -> str:
    month = rng.randrange(12)
    return f"{_MONTHS[month]} {rng.randint(1, _MONTH_DAYS[month])}"


def capacity_facts(n: int = 200, seed: int = 0) -> list[dict[str, str]]:
    """``n`` natural facts (topic, value), shuffled so that any prefix mixes kinds of facts; seeded."""
    rng = random.Random(seed)
    names = _FEMALE_NAMES + _MALE_NAMES
    pools = {
        "@name": rng.sample(names, len(names)),
        "@female": rng.sample(_FEMALE_NAMES, len(_FEMALE_NAMES)),
        "@male": rng.sample(_MALE_NAMES, len(_MALE_NAMES)),
        "@city": rng.sample(_CITIES, len(_CITIES)),
        "@job": rng.sample(_JOBS, len(_JOBS)),
        "@food": rng.sample(_FOODS, len(_FOODS)),
    }
    used: set[str] = set()

    def draw(pool: tuple[str, ...] | str) -> str:
        if pool == "@date" or pool == ("@date",):
            while (value := _date(rng)) in used:
                pass
        elif isinstance(pool, tuple) and len(pool) == 1 and pool[0].startswith("@"):
            value = pools[pool[0]].pop()
            while value in used:
                value = pools[pool[0]].pop()
        elif isinstance(pool, str):
            value = pools[pool].pop()
            while value in used:  # a name drawn from the gendered pool and the mixed one
                value = pools[pool].pop()
        else:
            value = rng.choice([v for v in pool if v not in used] or list(pool))
        used.add(value)
        return value

    by_attribute = {
        "name": "@name",
        "birthday": "@date",
        "job": "@job",
        "home city": "@city",
        "favourite food": "@food",
    }
    candidates: list[tuple[str, tuple[str, ...] | str]] = []
    candidates += [(t, p) for t, p in _SELF.items()]
    candidates += [(t, p) for t, p in _FAVOURITES.items()]
    candidates += [(t, p) for t, p in _PETS.items()]

    def pool_of(relation: str, attribute: str) -> str:
        if attribute == "name" and relation in _FEMALE | _MALE:
            return "@female" if relation in _FEMALE else "@male"
        return by_attribute[attribute]

    candidates += [(f"{r}'s {a}", pool_of(r, a)) for r in _RELATIONS for a in _RELATION_ATTRIBUTES]
    if n > len(candidates):
        raise ValueError(f"only {len(candidates)} topics in the pools, {n} asked")
    rng.shuffle(candidates)
    picked = candidates[:n]
    return [{"topic": topic, "value": draw(pool)} for topic, pool in picked]


def write_profile(path: Path = PROFILE, n: int = 200, seed: int = 0) -> Path:
    import yaml

    facts = capacity_facts(n, seed)
    header = (
        "# Generated by `python bench/capacity.py --write-profile` (seeded; do not edit by hand): 200 natural facts\n"
        "# for the capacity bench. A run with N facts takes the first N.\n"
    )
    body = yaml.safe_dump(
        {"user_name": "Robin Castillo", "assistant_name": "Andraeus", "facts": facts},
        sort_keys=False,
        allow_unicode=True,
        width=120,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8")
    return path


def capacity_profile(n: int) -> object:
    """The first ``n`` facts of the committed capacity profile."""
    from andraeus_core.profile import Profile, load_profile

    full = load_profile(PROFILE)
    if not 1 <= n <= len(full.facts):
        raise SystemExit(f"--facts must be 1..{len(full.facts)}, got {n}")
    return Profile(user_name=full.user_name, assistant_name=full.assistant_name, facts=list(full.facts[:n]))


# ----------------------------------------------------------------------------------------------------------------
# One run (a child process: its own peak RSS, a fresh model)


def _estimate_seconds(profile: object, config: object, home: Path | None) -> dict:
    """The estimate shown before training, with ``home``'s throughput cache (None: none, the default guess)."""
    from andraeus_core.estimate import estimate

    saved = os.environ.get("ANDRAEUS_HOME")
    with tempfile.TemporaryDirectory() as empty:
        if home is None and saved:
            # No throughput measured yet, but the guard answers cached as the run will find them.
            guards = Path(saved) / "cache" / "guards"
            if guards.is_dir():
                shutil.copytree(guards, Path(empty) / "cache" / "guards")
        os.environ["ANDRAEUS_HOME"] = str(home) if home is not None else empty
        try:
            est = estimate(profile, config)
        finally:
            if saved is None:
                os.environ.pop("ANDRAEUS_HOME", None)
            else:
                os.environ["ANDRAEUS_HOME"] = saved
    return {
        "seconds": est.expected_seconds,
        "prepare_seconds": est.prepare_seconds,
        "probe_seconds": est.probe_seconds,
        "guard_questions": est.guard_questions,
        "calibrated": est.calibrated,
        "tokens_per_second": est.tokens_per_second,
        "dtype": est.dtype,
        "tokens_per_epoch": est.tokens_per_epoch,
    }


def heldout_sample(adapter: object, per_fact: int, seed: int = 0) -> list:
    """Up to ``per_fact`` held-out phrasings per fact (every kind of phrasing drawn alike) and every guard item."""
    from andraeus_core.evaluate import heldout_questions

    rng = random.Random(seed)
    questions = heldout_questions(adapter)
    by_topic: dict[str, list] = {}
    guards = []
    for q in questions:
        if q.expect and q.topic and q.kind != "identity":
            by_topic.setdefault(q.topic, []).append(q)
        else:
            guards.append(q)
    sample = [
        q for topic in sorted(by_topic) for q in rng.sample(by_topic[topic], min(per_fact, len(by_topic[topic])))
    ]
    return sample + guards


RECALL_KINDS = ("paraphrase", "typo", "indirect", "reverse")


def _kind_counts(report: object) -> dict:
    """[correct, n] per kind, for the adapter as served (with its gate) and for the adapter alone."""
    out: dict = {"gated": {}, "alone": {}}
    for item in report.items:
        for system, correct in (("gated", item.correct), ("alone", _alone(item))):
            if correct is None:
                continue
            row = out[system].setdefault(item.kind, [0, 0])
            row[0] += int(correct)
            row[1] += 1
    for system in ("gated", "alone"):
        kinds = out[system]
        kinds["recall"] = [sum(kinds.get(k, [0, 0])[i] for k in RECALL_KINDS) for i in (0, 1)]
    return out


def _alone(item: object) -> bool | None:
    answer = item.baselines.get("adapter_alone")
    return None if answer is None else answer.correct


def run_one(facts: int, rank: int, workdir: Path, quick: bool, extra: dict | None = None) -> dict:
    """Train and evaluate one grid point; ``extra``: TrainConfig overrides on top of the cpu preset (experiments)."""
    from andraeus_core.config import TrainConfig
    from andraeus_core.evaluate import evaluate
    from andraeus_core.train import train

    profile = capacity_profile(facts)
    overrides: dict = {"lora_r": rank, "lora_alpha": 2 * rank, "seed": 0}
    overrides["base_model"] = "tiny-random" if quick else "smollm2-135m"
    if quick:
        overrides.update(epochs=1, per_fact=6, typo_augment=0)
    overrides.update(extra or {})
    config = TrainConfig.preset("cpu", **overrides)
    home = Path(os.environ["ANDRAEUS_HOME"])
    out: dict = {"facts": facts, "rank": rank, "overrides": extra or {}}
    out["estimate_default"] = _estimate_seconds(profile, config, None)
    out["estimate_calibrated"] = _estimate_seconds(profile, config, home)
    start = time.perf_counter()
    adapter = train(profile, config, out_dir=workdir / f"facts{facts}-r{rank}")
    out["train_s"] = round(time.perf_counter() - start, 1)
    meta = adapter.meta
    out["timings"] = meta.timings.model_dump()
    out["steps"] = meta.metrics.steps
    out["planned_steps"] = meta.metrics.planned_steps
    out["early_stop_epoch"] = meta.metrics.early_stop_epoch
    out["tokens_per_epoch"] = meta.metrics.tokens_per_epoch
    out["tokens_trained"] = round(meta.metrics.tokens_per_epoch * meta.metrics.epochs)
    out["tokens_per_second"] = meta.metrics.tokens_per_second
    out["train_examples"] = meta.dataset.get("train")
    out["train_peak_rss_mb"] = meta.metrics.peak_rss_mb
    out["adapter_mb"] = round((Path(adapter.path) / "adapter_model.safetensors").stat().st_size / 2**20, 1)

    sample = heldout_sample(adapter, 1 if quick else HELDOUT_PER_FACT)
    report = evaluate(adapter, sample, baselines=(), max_new_tokens=24 if quick else 48)
    out["heldout"] = {"n": report.n, "seconds": report.seconds, **_kind_counts(report)}
    # The evaluation a user runs (`andraeus eval` with both baselines), timed on a fixed-size sample.
    timed = random.Random(1).sample(sample, min(TIMED_EVAL_QUESTIONS, len(sample)))
    t = time.perf_counter()
    evaluate(adapter, timed, baselines=("base", "in_context"), max_new_tokens=24 if quick else 48)
    out["eval_both_baselines"] = {"n": len(timed), "seconds": round(time.perf_counter() - t, 1)}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The grid, the table and the chart


def _key(facts: int, rank: int) -> str:
    return f"facts{facts}-r{rank}"


def _child(facts: int, rank: int, workdir: Path, quick: bool, overrides: dict | None = None) -> dict:
    from andraeus_core.config import models_dir

    env = dict(os.environ)
    # The bench's own home: its throughput cache starts empty and is calibrated by its own runs only. The converted
    # base model is shared (no second conversion).
    env["ANDRAEUS_HOME"] = str(workdir / "home")
    env["ANDRAEUS_MODELS_DIR"] = str(models_dir())
    result = workdir / f"{_key(facts, rank)}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(facts), str(rank), "--workdir", str(workdir)]
    if quick:
        cmd.append("--quick")
    if overrides:
        cmd += ["--set", json.dumps(overrides)]
    subprocess.run(cmd, env=env, check=True)
    return json.loads(result.read_text())


def _pct(pair: list[int] | None) -> str:
    if not pair or not pair[1]:
        return "—"
    return f"{100 * pair[0] / pair[1]:.1f}% ({pair[0]}/{pair[1]})"


def _ratio(estimated: float, measured: float) -> str:
    return f"{estimated:.0f} s ({estimated / measured:.2f}x)" if measured else "—"


def table(results: dict) -> str:
    rows = sorted(results.values(), key=lambda r: (r["facts"], r["rank"]))
    lines = [
        "| facts | r | training | estimate: default guess | estimate: calibrated | examples | tokens trained | "
        "peak RSS | adapter | held-out recall (gated) | alone | unknown -> I don't know | over-trigger | "
        "eval, both baselines |",
        "|" + "---|" * 14,
    ]
    for r in rows:
        gated, alone = r["heldout"]["gated"], r["heldout"]["alone"]
        cal = r["estimate_calibrated"]
        lines.append(
            f"| {r['facts']} | {r['rank']} | {r['train_s']:.0f} s | "
            f"{_ratio(r['estimate_default']['seconds'], r['train_s'])} | "
            + (f"{_ratio(cal['seconds'], r['train_s'])} | " if cal["calibrated"] else "(none yet) | ")
            + f"{r['train_examples']} | {r['tokens_trained']:,} | {r['train_peak_rss_mb'] / 1024:.2f} GB | "
            f"{r['adapter_mb']} MB | {_pct(gated.get('recall'))} | {_pct(alone.get('recall'))} | "
            f"{_pct(gated.get('unknown'))} | {_pct(_flip(gated.get('unrelated')))} | "
            f"{r['eval_both_baselines']['seconds']:.0f} s ({r['eval_both_baselines']['n']} q) |"
        )
    return "\n".join(lines)


def _flip(pair: list[int] | None) -> list[int] | None:
    """An unrelated item is correct when it does not over-trigger: the over-trigger count is the rest."""
    return None if pair is None else [pair[1] - pair[0], pair[1]]


def chart(results: dict, path: Path) -> Path:
    from andraeus_core.plots import line_chart

    series: dict[str, list[tuple[float, float]]] = {}
    for r in results.values():
        correct, n = r["heldout"]["gated"]["recall"]
        if n:
            series.setdefault(f"r={r['rank']}", []).append((r["facts"], correct / n))
    ordered = dict(sorted(series.items(), key=lambda kv: int(kv[0][2:])))
    return line_chart(
        ordered,
        path,
        title="Held-out recall vs facts (SmolLM2-135M, cpu preset)",
        xlabel="facts in the profile",
        ylabel="held-out recall (%)",
        log_x=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, nargs="+", help=f"profile sizes (default {DEFAULT_FACTS} + large)")
    parser.add_argument("--ranks", type=int, nargs="+", help=f"LoRA ranks (default {DEFAULT_RANKS})")
    parser.add_argument("--no-large", action="store_true", help=f"skip {LARGE_FACTS} facts at r=64 in the default")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/andraeus-bench-capacity"))
    parser.add_argument("--report", action="store_true", help="print the table and draw the chart; train nothing")
    parser.add_argument("--again", action="store_true", help="rerun runs that already have results")
    parser.add_argument("--chart", type=Path, help="where to write the chart (default: WORKDIR/capacity.png)")
    parser.add_argument("--quick", action="store_true", help="tiny-random smoke run")
    parser.add_argument("--write-profile", action="store_true", help="regenerate " + str(PROFILE.relative_to(ROOT)))
    parser.add_argument(
        "--set", type=json.loads, default={}, help="TrainConfig overrides as JSON, e.g. '{\"per_fact\": 15}'"
    )
    parser.add_argument("--one", type=int, nargs=2, metavar=("FACTS", "RANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_profile:
        print(f"wrote {write_profile()}")
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.one:
        facts, rank = args.one
        out = run_one(facts, rank, args.workdir, args.quick, args.set)
        (args.workdir / f"{_key(facts, rank)}.json").write_text(json.dumps(out, indent=2))
        return
    grid: list[tuple[int, int]]
    if args.quick:
        grid = [(f, r) for f in (args.facts or (3, 6)) for r in (args.ranks or (4, 8))]
    else:
        grid = [(f, r) for f in (args.facts or DEFAULT_FACTS) for r in (args.ranks or DEFAULT_RANKS)]
        if not args.facts and not args.ranks and not args.no_large:
            grid += [(f, 64) for f in LARGE_FACTS]
    results: dict = {}
    for path in sorted(args.workdir.glob("facts*-r*.json")):
        data = json.loads(path.read_text())
        results[_key(data["facts"], data["rank"])] = data
    if not args.report:
        for facts, rank in grid:
            if _key(facts, rank) in results and not args.again:
                print(f"{_key(facts, rank)}: done earlier (--again reruns it)", flush=True)
                continue
            print(f"{_key(facts, rank)}: training and evaluating ...", flush=True)
            results[_key(facts, rank)] = _child(facts, rank, args.workdir, args.quick, args.set)
            print(table({_key(facts, rank): results[_key(facts, rank)]}).splitlines()[-1], flush=True)
    if not results:
        raise SystemExit(f"no results in {args.workdir}")
    print(table(results))
    print(f"chart: {chart(results, args.chart or args.workdir / 'capacity.png')}")


if __name__ == "__main__":
    main()
