"""`andraeus ...` — thin: parse arguments, call one public ``andraeus_core`` function, print.

The CLI is a front end like the web app and the REST API, so it lives outside the core and uses only its public
names. ``andraeus_core`` itself imports no heavy library at module level; torch, transformers, uvicorn, gradio and
the API/web packages are imported inside the command that needs them, so `andraeus --help` is instant.
Each subcommand is registered by an ``_add_<name>`` function next to its ``_cmd_<name>`` handler.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import warnings
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from andraeus_core import (
    DIMENSIONS,
    EXPORT_FORMATS,
    GGUF_QUANTS,
    Adapter,
    AndraeusError,
    ChatModel,
    ConfigError,
    GenerationConfig,
    ProgressEvent,
    Store,
    TrainConfig,
    adapter_history,
    build_dataset,
    default_model_name,
    default_preset,
    diff_profiles,
    estimate_training,
    evaluate_adapter,
    export_adapter,
    generate_variations,
    generated_per_fact,
    list_presets,
    load_chat_model,
    load_profile,
    pull_adapter,
    push_adapter,
    push_export,
    resolve_adapter,
    train_adapter,
    update_config,
    write_jsonl,
)

Handler = Callable[[argparse.Namespace], int]


def _base_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-model",
        default=None,
        help="preset (smollm2-135m, qwen2.5-7b, tiny-random, ...), local model directory or Hub id "
        "(default: $ANDRAEUS_BASE_MODEL, else qwen2.5-7b with CUDA, smollm2-135m on CPU)",
    )


# ----------------------------------------------------------------------------------------------------------------
# andraeus chat


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a base model, optionally with a trained adapter")
    _base_model_arg(p)
    p.add_argument(
        "--adapter", default=None, help="a trained LoRA adapter directory, or a Hub repo id owner/name[@revision]"
    )
    p.add_argument("--system", default=None, help="system prompt (default: the adapter's, else the model's)")
    p.add_argument(
        "--speaker",
        metavar="NAME",
        default=None,
        help="with a family adapter: who is asking (a name, relation or alias); without it the assistant does not "
        "know who asks and tells only shared facts and others' public ones",
    )
    p.add_argument("--once", metavar="QUESTION", default=None, help="answer one question, print it and exit")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--quantize", choices=["4bit"], default=None, help="load the base model in 4-bit NF4")
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="let the adapter answer everything (default: its gate sends general questions to the base model and "
        "declines unknown personal ones)",
    )
    p.set_defaults(handler=_cmd_chat)


def _cmd_chat(args: argparse.Namespace) -> int:
    try:
        config = GenerationConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    except ValidationError as exc:
        raise AndraeusError(_pydantic_message(exc)) from None
    adapter = args.adapter
    if adapter is not None:
        adapter = resolve_adapter(adapter, token=_cli_token(None))  # a repo id is pulled with your token
    chat = load_chat_model(
        args.base_model, adapter, quantize=args.quantize, system_prompt=args.system, gate=not args.no_gate
    )
    speaker = _check_speaker(chat, args)
    if args.once is not None:
        for piece in chat.stream([{"role": "user", "content": args.once}], config, speaker=speaker):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        gated = " (gated)" if chat.gate is not None else ""
        asking = f", {speaker} asking" if speaker else ""
        print(
            f"Chatting with {chat.loaded.name}"
            + (f" + adapter {chat.adapter_dir}{gated}{asking}" if chat.has_adapter else "")
        )
        print("Type a message; /reset clears the conversation, /exit (or Ctrl-D) quits.")
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text in {"/exit", "/quit"}:
            return 0
        if text == "/reset":
            history.clear()
            print("(conversation cleared)")
            continue
        history.append({"role": "user", "content": text})
        if interactive:
            sys.stdout.write("assistant> ")
        answer = ""
        try:
            for piece in chat.stream(history, config, speaker=speaker):
                answer += piece
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [interrupted]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": answer.strip()})


def _check_speaker(chat: ChatModel, args: argparse.Namespace) -> str | None:
    """The --speaker to chat as, checked before the first question; for a family adapter without one, say once on
    stderr what that means and who may be named.

    Raises:
        ConfigError: --speaker without a family adapter, or a name that is no one in the family (listing who is).
    """
    family = chat.speakers
    name = (args.speaker or "").strip() or None
    if args.speaker is not None and not family:
        what = "this adapter knows one person" if chat.has_adapter else "no adapter was given"
        raise ConfigError(f"--speaker is for a family adapter (--adapter DIR of a family profile); {what}.")
    chat.speaker_prompt(name)  # raises ConfigError for a name that is no one in the family, listing who is
    if family and args.system is not None:
        print("note: --system is not used with a family adapter; the speaker's prompt is.", file=sys.stderr)
    if family and name is None:
        print(
            f"note: this adapter is a family's ({', '.join(family)}) and no --speaker was given: it answers someone "
            "it does not know, with shared facts and the others' public facts only. Say who is asking with "
            f"--speaker NAME, one of: {', '.join(family)} (a relation or alias works too).",
            file=sys.stderr,
        )
        return None
    person = chat.profile.person(name) if name is not None else None
    return person.name if person is not None else None


# ----------------------------------------------------------------------------------------------------------------
# andraeus models


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the base-model presets")
    p.set_defaults(handler=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    default = default_model_name()
    for preset in list_presets():
        mark = "*" if preset.name == default else " "
        print(f"{mark} {preset.name:<14} {preset.description}")
    print("(* = the default here; any local model directory or Hub id also works)")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus push / pull


def _cli_token(explicit: str | None) -> str | None:
    """The local user's own token: --token, else HF_TOKEN, else the `hf auth login` one (fine for a CLI user)."""
    if explicit:
        return explicit
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="upload an adapter to your own Hugging Face repo (private unless --public)")
    p.add_argument("adapter", help="the adapter directory")
    p.add_argument("repo_id", help="owner/name (a bare name goes under your user name)")
    p.add_argument("--public", action="store_true", help="make the repo public (an existing public repo needs this)")
    p.add_argument("--token", default=None, help="write token (default: HF_TOKEN, else `hf auth login`)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument(
        "--include-user-name", action="store_true", help="name the profile's user in the model card (off by default)"
    )
    p.set_defaults(handler=_cmd_push)


def _cmd_push(args: argparse.Namespace) -> int:
    url = push_adapter(
        args.adapter,
        args.repo_id,
        _cli_token(args.token),
        private=not args.public,
        commit_message=args.message,
        include_user_name=args.include_user_name,
    )
    print(url)
    return 0


def _add_pull(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="download an adapter from the Hub (safetensors only, revision pinned)")
    p.add_argument("repo_id", help="owner/name or owner/name@revision")
    p.add_argument("--revision", default=None, help="branch, tag or commit sha (default: main)")
    p.add_argument("--token", default=None, help="Hub token for a private repo (default: HF_TOKEN, else login)")
    p.set_defaults(handler=_cmd_pull)


def _cmd_pull(args: argparse.Namespace) -> int:
    print(pull_adapter(args.repo_id, token=_cli_token(args.token), revision=args.revision))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus serve / andraeus keys


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the OpenAI-compatible REST API at /v1 and the web app at /")
    p.add_argument("--host", default="127.0.0.1", help="bind address (no-auth mode only on 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workers", type=int, default=None, help="training worker threads (default 1)")
    p.add_argument("--max-queued", type=int, default=None, help="queued jobs before new ones get 429 (default 16)")
    p.add_argument("--no-ui", action="store_true", help="serve the API only, without the web app")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    # Front ends load their heavy stacks (FastAPI, uvicorn, gradio) only for the command that serves them.
    import uvicorn

    from api.deps import ApiSettings
    from api.main import create_app

    settings = ApiSettings.from_env(host=args.host, workers=args.workers, max_queued=args.max_queued)
    app = create_app(settings)
    if not args.no_ui:
        app = _mount_ui(app)
    logging.getLogger("andraeus").setLevel(logging.INFO)
    print(f"Andraeus API on http://{args.host}:{args.port}/v1 (docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def _mount_ui(app: object) -> object:
    """Mount the Gradio web app at / (behind the API keys); the API works without it (say why it is missing)."""
    try:
        import andraeus_web  # noqa: F401 - only to know whether the web app can be served
        from api.main import mount_web_app
    except Exception as exc:  # noqa: BLE001 - the UI is optional (gradio may not be installed)
        logging.getLogger("andraeus").warning(
            "Web app not mounted (%s: %s); serving the API only", type(exc).__name__, exc
        )
        return app
    return mount_web_app(app, path="/")  # type: ignore[arg-type]


def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="manage REST API keys (each key is a tenant unless --tenant is shared)")
    keys = p.add_subparsers(dest="keys_command", metavar="ACTION")
    keys.required = True
    create = keys.add_parser("create", help="create a key and print it once (only its hash is stored)")
    create.add_argument("--name", default="default", help="a label for the key")
    create.add_argument("--tenant", default=None, help="share an existing tenant (default: a new tenant)")
    keys.add_parser("list", help="list keys (ids, tenants, hints; never the keys)")
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    p.set_defaults(handler=_cmd_keys)


def _cmd_keys(args: argparse.Namespace) -> int:
    store = Store()
    try:
        if args.keys_command == "create":
            key, record = store.create_key(args.name, args.tenant)
            print(key)
            print(
                f"(id {record['id']}, tenant {record['tenant']}; store it now, it is not shown again)", file=sys.stderr
            )
        elif args.keys_command == "list":
            for r in store.list_keys():
                state = "revoked" if r["revoked"] else "active"
                print(f"{r['id']}  {r['tenant']}  {r['hint']}  {r['name']}  {state}")
        elif not store.revoke_key(args.key_id):
            raise AndraeusError(f"No API key with id {args.key_id!r} (see `andraeus keys list`).")
    finally:
        store.close()
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus variations


def _add_variations(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "variations", help="show the question phrasings and training examples a profile becomes (no model needed)"
    )
    p.add_argument("profile", help="profile file (.yaml, .yml, .json or .csv)")
    p.add_argument("--per-fact", type=int, default=30, help="question phrasings per fact (default 30)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same output (default 0)")
    p.add_argument("--user-name", default=None, help="your name (overrides the file's; CSV files have none)")
    p.add_argument("--heldout-share", type=float, default=0.2, help="share kept for evaluation (default 0.2)")
    p.add_argument("--out", default=None, help="write the training examples as OpenAI chat JSONL to this file")
    p.add_argument("--heldout-out", default=None, help="write the held-out examples (with meta) as JSONL here")
    p.add_argument("--sample", type=int, default=10, help="how many example conversations to print (default 10)")
    p.set_defaults(handler=_cmd_variations)


def _cmd_variations(args: argparse.Namespace) -> int:
    if not 1 <= args.per_fact <= 500:
        raise AndraeusError(f"--per-fact must be between 1 and 500 (got {args.per_fact}).", param="per_fact")
    profile = load_profile(args.profile, user_name=args.user_name)
    dataset = build_dataset(profile, per_fact=args.per_fact, heldout_share=args.heldout_share, seed=args.seed)
    # The phrasings build_dataset split: per_fact to train on, the held-out ones generated on top.
    total = generated_per_fact(args.per_fact, args.heldout_share)
    variations = generate_variations(profile, per_fact=total, seed=args.seed)
    columns = [*DIMENSIONS, "user"]
    width = max(len("fact"), *(len(t) for t in variations))
    trained_questions = {e.question for e in dataset.train}
    print(f"{'fact':<{width}}  " + "  ".join(f"{c:>11}" for c in columns) + "  distinct   trained")
    for topic, phrasings in variations.items():
        counts = [sum(p.dimension == c for p in phrasings) for c in columns]
        distinct = {p.question for p in phrasings}
        trained = len(distinct & trained_questions)
        print(f"{topic:<{width}}  " + "  ".join(f"{n:>11}" for n in counts) + f"  {len(distinct):>8}  {trained:>8}")
    stats = dataset.stats()
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats["train_by_kind"].items()))
    held = ", ".join(f"{k} {n}" for k, n in sorted(stats["heldout_by_kind"].items()))
    print(f"\ntrain: {stats['train']} examples ({kinds})")
    print(f"held out for evaluation: {stats['heldout']} examples ({held})")
    print(f"system prompt: {dataset.system_prompt}")
    if args.sample > 0:
        # The user's own terminal, explicitly asked for: showing their facts here is the point.
        print("\nsample:")
        for example in random.Random(args.seed).sample(dataset.train, min(args.sample, len(dataset.train))):
            print(f"  [{example.meta.kind}/{example.meta.dimension}] {example.question}  ->  {example.answer}")
    if args.out:
        print(f"\nwrote {write_jsonl(dataset.train, args.out)} ({len(dataset.train)} training examples)")
    if args.heldout_out:
        path = write_jsonl(dataset.heldout, args.heldout_out, with_meta=True)
        print(f"wrote {path} ({len(dataset.heldout)} held-out examples)")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus train


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA/QLoRA adapter on a profile of facts (YAML, JSON or CSV)")
    p.add_argument("profile", help="the profile file (see examples/)")
    _base_model_arg(p)
    p.add_argument(
        "--preset",
        choices=["seed", "cpu"],
        default=None,
        help="training recipe (default: seed with CUDA, cpu otherwise)",
    )
    p.add_argument("--epochs", type=int, default=None, help="passes over the training phrasings")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank r (alpha follows as 2r, the seed's ratio)")
    p.add_argument("--quantize", choices=["4bit"], default=None, help="QLoRA: load the base model in 4-bit NF4")
    p.add_argument("--out", default=None, help="adapter directory (default: under $ANDRAEUS_HOME/adapters)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--user-name", default=None, help="the user's name (CSV profiles carry none; default 'User')")
    p.add_argument("--checkpoint-every", type=int, default=None, help="save a checkpoint every N optimiser steps")
    p.add_argument("--no-early-stop", action="store_true", help="train all epochs even once the facts are learned")
    p.set_defaults(handler=_cmd_train)


def _train_with_progress(run: Callable[[Callable[[ProgressEvent], None], Callable[[], bool]], Adapter]) -> Adapter:
    """Call ``run(on_progress, should_stop)`` with a progress bar on stderr; the first Ctrl-C stops after a step."""
    stop = {"requested": False}

    def on_sigint(signum: int, frame: object) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print("\nstopping after this step (Ctrl-C again to abort at once)", file=sys.stderr)

    tty = sys.stderr.isatty()
    last = {"printed": -1}

    def on_progress(event: ProgressEvent) -> None:
        if event.phase != "train":
            if event.message:
                print(
                    ("\n" if tty and last["printed"] >= 0 else "") + f"[{event.phase}] {event.message}",
                    file=sys.stderr,
                )
            return
        total = max(event.total_steps, 1)
        width = 30
        filled = int(width * event.step / total)
        bar = "#" * filled + "." * (width - filled)
        eta = f"{event.eta_seconds:.0f}s" if event.eta_seconds is not None else "?"
        tps = f"{event.tokens_per_second:,.0f}" if event.tokens_per_second else "?"
        line = (
            f"[{bar}] step {event.step}/{total} epoch {event.epoch:.2f} loss {event.loss:.4f} "
            f"lr {event.learning_rate or 0:.2e} {tps} tok/s ETA {eta}"
        )
        if tty:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif event.step == total or event.step - last["printed"] >= max(1, total // 10):
            print(line, file=sys.stderr, flush=True)
        last["printed"] = event.step

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        adapter = run(on_progress, lambda: stop["requested"])
    finally:
        signal.signal(signal.SIGINT, previous)
    if tty:
        sys.stderr.write("\n")
    return adapter


def _cmd_train(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.base_model is not None:
        overrides["base_model"] = args.base_model
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.rank is not None:
        overrides["lora_r"] = args.rank
        overrides["lora_alpha"] = 2 * args.rank
    if args.quantize is not None:
        overrides["quantize"] = args.quantize
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    if args.no_early_stop:
        overrides["early_stop"] = False
    profile = load_profile(args.profile, user_name=args.user_name) if args.user_name else load_profile(args.profile)
    config = TrainConfig.preset(args.preset or default_preset(), facts=len(profile.facts), **overrides)
    print("Estimate: " + estimate_training(profile, config).summary(), flush=True)

    adapter = _train_with_progress(
        lambda on_progress, should_stop: train_adapter(
            profile, config, on_progress=on_progress, should_stop=should_stop, resume=args.resume, out_dir=args.out
        )
    )
    metrics = adapter.meta.metrics
    stopped = metrics.early_stop_epoch
    print(
        f"Trained {metrics.steps} steps in {adapter.meta.timings.total_seconds:.0f}s, final loss "
        f"{metrics.final_loss}" + (f", facts learned after epoch {stopped} (early stop)" if stopped else "")
    )
    print(adapter.path)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus update / andraeus history


def _add_update(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update", help="update an adapter to a changed profile, training from its weights on what changed"
    )
    p.add_argument("adapter", help="the adapter directory to update (it must hold its private profile)")
    p.add_argument("profile", help="the new profile file")
    p.add_argument("--out", default=None, help="the new adapter's directory (default: under $ANDRAEUS_HOME/adapters)")
    p.add_argument("--full", action="store_true", help="retrain from scratch on the new profile (lineage is kept)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the update's examples")
    p.add_argument("--user-name", default=None, help="the user's name (CSV profiles carry none)")
    p.set_defaults(handler=_cmd_update)


def _cmd_update(args: argparse.Namespace) -> int:
    parent = Adapter.load(resolve_adapter(args.adapter))
    profile = load_profile(args.profile, user_name=args.user_name) if args.user_name else load_profile(args.profile)
    if parent.private.profile is not None:
        diff = diff_profiles(parent.profile(), profile)
        # Old -> new values only on the user's own terminal, never into a pipe or a log file.
        values = sys.stdout.isatty()
        print(f"Changes ({diff.summary()}):")
        for change in diff.changes:
            print("  " + change.describe(values=values))
        if diff.names_changed:
            print("  the user's or the assistant's name changed")
        if diff.empty and not args.full:
            print("Nothing changed; no adapter written.")
            return 0
    config = update_config(parent, full=args.full, epochs=args.epochs)
    adapter = _train_with_progress(
        lambda on_progress, should_stop: train_adapter(
            profile,
            config,
            on_progress=on_progress,
            should_stop=should_stop,
            out_dir=args.out,
            parent=parent,
            full=args.full,
        )
    )
    meta = adapter.meta
    how = "retrained" if args.full else "updated"
    print(f"Version {meta.version} ({how}) in {meta.timings.total_seconds:.0f}s, {meta.metrics.steps} steps")
    print(adapter.path)
    return 0


def _add_history(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="the chain of versions an adapter came from (topics only)")
    p.add_argument("adapter", help="an adapter directory or owner/name[@revision]")
    p.set_defaults(handler=_cmd_history)


def _cmd_history(args: argparse.Namespace) -> int:
    adapter = Adapter.load(resolve_adapter(args.adapter))
    for entry in adapter_history(adapter):
        changes = ", ".join(f"{c.kind} {c.old_topic + ' -> ' if c.old_topic else ''}{c.topic}" for c in entry.changes)
        print(
            f"v{entry.version}  {entry.method:<6}  {entry.created or '?':<20}  "
            f"{(entry.weights_sha256 or '?')[:12]}  {changes or '-'}"
        )
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus eval


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="held-out recall of an adapter by kind, against the base and in-context baselines")
    p.add_argument("adapter", help="a trained adapter directory")
    p.add_argument(
        "--questions",
        default=None,
        metavar="FILE.jsonl",
        help="questions to ask (see eval_sets/README.md); default: the adapter's held-out split",
    )
    p.add_argument("--json", action="store_true", help="print exactly one JSON object (the full report) on stdout")
    p.add_argument("--no-baselines", action="store_true", help="evaluate the adapter only (faster)")
    p.add_argument(
        "--no-gate", action="store_true", help="evaluate the adapter without its gate (default: through it)"
    )
    _base_model_arg(p)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64, help="questions per forward pass")
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    def progress(fraction: float, message: str) -> None:
        if not args.json or args.verbose:
            print(f"[{100 * fraction:3.0f}%] {message}", file=sys.stderr)

    report = evaluate_adapter(
        args.adapter,
        args.questions,
        **({"baselines": ()} if args.no_baselines else {}),
        base_model=args.base_model,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        on_progress=progress,
        gate=not args.no_gate,
    )
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False) + "\n")
    else:
        print(report.table())
    return 0


# ----------------------------------------------------------------------------------------------------------------
# andraeus export


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="take an adapter anywhere: merged model, GGUF, Ollama bundle, vLLM multi-LoRA recipe (local only)",
    )
    p.add_argument(
        "adapter", nargs="+", help="the adapter directory; for vllm, several adapters or a directory of adapters"
    )
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="fmt", help="what to write")
    p.add_argument("--quant", choices=GGUF_QUANTS, default=None, help="GGUF type for gguf/ollama (default f16 / q8_0)")
    p.add_argument("--out", default=None, help="output directory (default: under $ANDRAEUS_HOME/exports)")
    p.add_argument("--name", default=None, help="Ollama model name, or the vLLM name of a single adapter")
    p.add_argument("--max-lora-rank", type=int, default=None, help="vllm: --max-lora-rank (default: the smallest fit)")
    p.add_argument("--push", default=None, metavar="REPO", help="also upload the export to this private Hub repo")
    p.add_argument(
        "--confirm-facts-in-weights",
        action="store_true",
        help="with --push: you understand the exported weights hold your facts (the repo is always private)",
    )
    p.add_argument("--token", default=None, help="with --push: write token (default: HF_TOKEN, else `hf auth login`)")
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    if args.push and not args.confirm_facts_in_weights:  # refused before any work, not after a long export
        push_export("", args.push, "", confirm_facts_in_weights=False)
    result = export_adapter(
        args.adapter,
        args.fmt,
        args.out,
        quant=args.quant,
        name=args.name,
        max_lora_rank=args.max_lora_rank,
        on_progress=lambda message: print(f"[export] {message}", file=sys.stderr, flush=True),
    )
    print(f"Exported {args.fmt} ({result.bytes / 1e6:,.1f} MB in {result.seconds:.0f}s) to {result.path}")
    if result.commands:
        print("Next:")
        for command in result.commands:
            print(f"  {command}")
    if args.push:
        url = push_export(result.path, args.push, _cli_token(args.token), confirm_facts_in_weights=True)
        print(f"Pushed to {url} (private)")
    return 0


# ----------------------------------------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_chat,
    _add_models,
    _add_eval,
    _add_train,
    _add_update,
    _add_history,
    _add_export,
    _add_push,
    _add_pull,
    _add_serve,
    _add_keys,
    _add_variations,
]


def _pydantic_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", lambda: [])()
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')} (got {e.get('input')!r})" for e in errors]
    return "Invalid settings: " + "; ".join(parts) if parts else str(exc)


def build_parser() -> argparse.ArgumentParser:
    """The `andraeus` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="andraeus",
        description="Teach an open LLM the facts of one person's life: phrasings → LoRA adapter → honest recall.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `andraeus` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # transformers/tqdm chatter ("Loading weights") is noise for a CLI user; -v shows it.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        # bitsandbytes warns at import that an optional Hub-downloaded CPU kernel is missing (its own NF4 code is
        # used instead), and libraries emit FutureWarnings about their own internals: neither is actionable here.
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning)
    handler: Handler = args.handler
    try:
        return handler(args)
    except AndraeusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
