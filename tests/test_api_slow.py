"""The whole API flow with the embedded default model: train on a small profile, then a held-out question answered
through /v1/chat/completions gives the fact (slow: trains SmolLM2-135M on 2 CPU cores)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
KEY = "slow-test-key-0123456789abc"
H = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.slow
def test_api_trains_default_model_and_answers_a_heldout_question() -> None:
    from andraeus_core import Service, Store
    from api.deps import ApiSettings
    from api.main import create_app

    app = create_app(ApiSettings(api_keys=KEY, workers=1), Service(Store(), workers=1))
    with TestClient(app) as c:
        with open(ROOT / "examples" / "minimal.csv", "rb") as fh:
            fid = c.post("/v1/files", headers=H, files={"file": ("minimal.csv", fh)}).json()["id"]
        job = c.post("/v1/fine_tuning/jobs", headers=H, json={"model": "smollm2-135m", "training_file": fid}).json()
        deadline = time.time() + 900
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.time() < deadline, "training took too long"
            time.sleep(1)
            job = c.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=H).json()
        assert job["status"] == "succeeded", job["error"]

        report = c.get(f"/v1/fine_tuning/jobs/{job['id']}/evaluation?baselines=base", headers=H).json()
        assert report["recall"] > report["baselines"]["base"]["recall"], (report["recall"], report["baselines"])
        recalled = [i for i in report["items"] if i["correct"] and i["kind"] in ("paraphrase", "typo", "indirect")]
        assert recalled, "no held-out fact question was answered"
        item = recalled[0]
        r = c.post(
            "/v1/chat/completions",
            headers=H,
            json={
                "model": job["fine_tuned_model"],
                "messages": [{"role": "user", "content": item["question"]}],
                "max_tokens": 48,
            },
        )
        answer = r.json()["choices"][0]["message"]["content"]
        assert any(v.lower() in answer.lower() for v in item["expect"]), (item["question"], answer)
