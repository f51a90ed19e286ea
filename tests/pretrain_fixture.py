"""A small preprocessing output (the contract of preprocessing/contract.py) for trainer and loader tests.

Sentences are built from entity names and fixed phrases tokenized by a stand-in tokenizer, so the
mentions' token spans are exact and the masked-word/entity tasks are learnable in a few steps.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NAMES = {
    "en": ["Berlin", "Paris", "Tokyo", "Germany", "France", "Japan", "Einstein", "Curie", "Newton", "Rhine",
           "Seine", "Danube", "Mozart", "Bach"],
    "de": ["Berlin", "Paris", "Tokio", "Deutschland", "Frankreich", "Japan", "Einstein", "Curie", "Newton",
           "Rhein", "Seine", "Donau", "Mozart", "Bach"],
}
PHRASES = {
    "en": [" is near ", " was born in ", " flows through ", " and ", " is the capital of "],
    "de": [" liegt bei ", " wurde geboren in ", " fließt durch ", " und ", " ist die Hauptstadt von "],
}
SIZES = {"en": 48, "de": 24}


def sentences(lang: str, rng: random.Random, n: int):
    for _ in range(n):
        pieces = []
        for _ in range(rng.randint(2, 4)):
            e = rng.randrange(len(NAMES[lang]))
            pieces.append(("entity", NAMES[lang][e], e))
            pieces.append(("text", rng.choice(PHRASES[lang]), None))
        yield pieces


def build(out: Path, xlmr_dir: Path | None = None) -> Path:
    """Write OUT/{dataset/<lang>, dataset/metadata.json, tokenizer/, entity_vocab.jsonl, entity_vocab.json}
    and, when xlmr_dir is given, a tiny XLM-R there."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from preprocessing.contract import DatasetLimits, DatasetMetadata, sha256_file
    from pretrain.standin import build_standin_tokenizer, build_tiny_xlmr

    out = Path(out)
    corpus = [n for names in NAMES.values() for n in names] + [p for ps in PHRASES.values() for p in ps]
    tok_dir = build_standin_tokenizer(out / "tokenizer", corpus * 20, vocab_size=200)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    num_entities = 3 + len(NAMES["en"])  # [PAD] [UNK] [MASK] + one id per (cross-language) entity
    rng = random.Random(0)
    for lang, size in SIZES.items():
        cols = {"word_ids": [], "entity_ids": [], "entity_spans": [], "page_id": [], "language": []}
        for i, pieces in enumerate(sentences(lang, rng, size)):
            ids, ents, spans = [tokenizer.bos_token_id], [], []
            for kind, text, e in pieces:
                piece = tokenizer(text, add_special_tokens=False)["input_ids"]
                if kind == "entity":
                    ents.append(3 + e)
                    spans.append([len(ids), len(ids) + len(piece)])
                ids += piece
            ids.append(tokenizer.eos_token_id)
            cols["word_ids"].append(ids)
            cols["entity_ids"].append(ents)
            cols["entity_spans"].append(spans)
            cols["page_id"].append(i)
            cols["language"].append(lang)
        Dataset.from_dict(cols).save_to_disk(str(out / "dataset" / lang))
    with open(out / "entity_vocab.jsonl", "w") as f:
        for i, special in enumerate(["[PAD]", "[UNK]", "[MASK]"]):
            f.write(json.dumps({"id": i, "entities": [[special, None]], "count": 0}) + "\n")
        for e in range(len(NAMES["en"])):
            f.write(json.dumps({"id": 3 + e, "entities": [[NAMES[l][e], l] for l in NAMES], "count": 1}) + "\n")
    flat = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2}
    flat.update({f"{l}:{NAMES[l][e]}": 3 + e for l in NAMES for e in range(len(NAMES[l]))})
    flat["[MASK2]"] = num_entities
    (out / "entity_vocab.json").write_text(json.dumps(flat, ensure_ascii=False))
    DatasetMetadata(
        tokenizer=str(tok_dir), tokenizer_vocab_size=len(tokenizer),
        tokenizer_sha256=sha256_file(tok_dir / "tokenizer.json"), entity_vocab_size=num_entities,
        entity_vocab_sha256=sha256_file(out / "entity_vocab.jsonl"), languages=list(SIZES),
        limits=DatasetLimits(max_seq_length=128, max_entity_length=32, max_mention_length=30),
    ).write(out)
    if xlmr_dir is not None:
        build_tiny_xlmr(xlmr_dir, tok_dir)
    return out


@pytest.fixture(scope="session")
def pretrain_data(shared_dir) -> Path:
    """OUT with a tiny dataset (OUT/xlmr: the tiny XLM-R it fits), built once per session."""
    from filelock import FileLock

    path = shared_dir / "pretrain_data"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            tmp = shared_dir / "pretrain_data.building"
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp, tmp / "xlmr")
            tmp.rename(path)
    return path


def compose(overrides: list[str]):
    """The PretrainConfig that `launch/pretrain.py <overrides>` would build (same conf/ tree)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = hydra_compose(config_name="pretrain", overrides=overrides)
    return OmegaConf.to_object(cfg)


def tiny_overrides(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.dir={data}", f"model.init_from={data / 'xlmr'}", f"run_dir={run_dir}", "wandb.mode=disabled",
        "trainer.progress=false", "trainer.global_batch_size=8", "trainer.micro_batch_size=4",
        "trainer.log_every=1", "trainer.eval_every=0", "optim.warmup_steps=1", "data.eval_examples=8",
        *extra,
    ]


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """Training records by step; a step logged again after a resume keeps the later record."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[rec["step"]] = rec
    return out
