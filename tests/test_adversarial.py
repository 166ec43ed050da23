"""A bounded attacker against a live server on 127.0.0.1 (issue 15), on tiny-random: bench/adversarial.py's attack.

One pass over every malformed, oversized and foreign request the hardening review tried: none may be a 500 or break
the keep-alive connection, none may be accepted, each is refused in under a second, and a stream that never reads
leaves other chats as fast as before.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("adversarial", ROOT / "bench" / "adversarial.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_attacker_gets_no_500_no_slow_rejection_and_stalls_no_chat(tiny_model: Any) -> None:
    from api.deps import ApiSettings

    bench = _bench()
    url, stop = bench.serve(ApiSettings(api_keys=f"alice={bench.KEY_A},bob={bench.KEY_B}", workers=0))
    try:
        figures = bench.attack(url, "tiny-random", rounds=1, latency_samples=3)
    finally:
        stop()
    print(bench.report(figures))  # noqa: T201 - the figures, shown with pytest -s
    assert figures["requests"] >= 60
    assert figures["server_errors"] == []
    assert figures["accepted"] == []
    assert figures["slowest_rejection_s"] < 1.0, figures["slowest_request"]
    # "Unchanged within noise": a short chat on tiny-random takes tens of ms, so allow a margin, not a ratio.
    assert figures["chat_beside_stalled_stream_s"] < 2 * figures["chat_alone_s"] + 0.5
