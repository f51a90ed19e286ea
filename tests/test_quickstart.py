"""The quickstart end to end at a small size: sample → stand-in → preprocess → deepspeed stage 1 and 2
on 2 CPU processes → export → transformers → cloze → report; then a rerun reuses every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DS_ACCELERATOR="cpu")
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, str(ROOT / "launch" / "quickstart.py"), f"out={out}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.jsonl") as f:
        return [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]


def test_quickstart_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "qs"
    result = quickstart(out, "steps=40")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "stand-in" in result.stdout

    for stage in ("stage1-entity", "stage2-full"):
        run = out / "runs" / stage
        losses = train_losses(run)
        assert len(losses) == 4 and losses[-1] < losses[0], (stage, losses)
        assert list((run / "wandb").glob("offline-run-*"))

    from transformers import LukeForMaskedLM, MLukeTokenizer

    model = LukeForMaskedLM.from_pretrained(out / "export")
    tokenizer = MLukeTokenizer.from_pretrained(out / "export")
    vocab = json.loads((out / "data" / "entity_vocab.json").read_text(encoding="utf-8"))
    enc = tokenizer("Berlin is the capital of Germany.", entities=["en:Berlin", "de:Deutschland"],
                    entity_spans=[(0, 6), (25, 32)], return_tensors="pt")
    assert enc["entity_ids"][0].tolist() == [vocab["en:Berlin"], vocab["de:Deutschland"]]
    assert model(**enc).logits.shape[-1] == model.config.vocab_size

    cloze = json.loads((out / "cloze_results.json").read_text())
    languages = {"ar", "de", "en", "fr", "hi", "ja", "th"}
    assert set(cloze["word"]) == languages and set(cloze["entity"]) == languages
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "Cloze" in html

    again = quickstart(out, "steps=40")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout.count("done already") == 7
