"""Training-step speed: tokens/s and time per step split into data loading, forward+backward and
optimizer, through the trainer's own pieces (Arrow loader with its prefetch thread, masking
collator, DeepSpeed engine, AdamW), on synthetic data of the real format.

    python benchmarks/train_step.py                       # tiny and base on CPU
    python benchmarks/train_step.py --configs base --device cuda --seq-len 512 --micro-batch 32
Prints one table row per config; MFU (PaLM formula, see pretrain/trainer.py) on a GPU.
Data loading is measured as the time the step waits for the next batch (the prefetch thread
works meanwhile), which is what must stay < 5% of the step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DS_ACCELERATOR", "cpu" if "--device" not in sys.argv or "cpu" in sys.argv else "cuda")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = {  # XLM-R sizes; tiny = the test/quickstart stand-in
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 vocab_size=250002),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  vocab_size=250002),
}


class InMemoryDataset:
    """The part of datasets.Dataset the loader uses, over Python lists (--in-memory)."""

    def __init__(self, cols: dict):
        self.cols, self._fingerprint = cols, "in-memory"

    def __len__(self):
        return len(self.cols["word_ids"])

    def __getitem__(self, indices):
        return {k: [v[i] for i in indices] for k, v in self.cols.items()}


def synthetic_dataset(out: Path, vocab_size: int, entity_vocab: int, seq_len: int, n: int, in_memory: bool):
    """OUT/dataset/{en,de} with the PLAN.md columns: packed sequences with one mention every ~8 tokens.
    in_memory: return {lang: InMemoryDataset} instead of writing Arrow files."""
    rng = np.random.default_rng(0)
    datasets = {}
    for lang in ("en", "de"):
        cols = {"word_ids": [], "entity_ids": [], "entity_spans": [], "page_id": [], "language": []}
        for i in range(n):
            words = [0, *rng.integers(5, vocab_size - 1, seq_len - 2).tolist(), 2]
            starts = list(range(1, seq_len - 4, 8))[:32]
            cols["word_ids"].append(words)
            cols["entity_ids"].append(rng.integers(3, entity_vocab, len(starts)).tolist())
            cols["entity_spans"].append([[s, s + 2] for s in starts])
            cols["page_id"].append(i)
            cols["language"].append(lang)
        if in_memory:
            datasets[lang] = InMemoryDataset(cols)
        else:
            from datasets import Dataset

            Dataset.from_dict(cols).save_to_disk(str(out / "dataset" / lang))
    meta = {"tokenizer_vocab_size": vocab_size, "entity_vocab_size": entity_vocab, "max_seq_length": seq_len,
            "max_entity_length": 32, "max_mention_length": 30, "languages": ["en", "de"]}
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    (out / "dataset" / "metadata.json").write_text(json.dumps(meta))
    return datasets


class FakeTokenizer:
    """What MaskingCollator.from_tokenizer reads, for an XLM-R-sized vocabulary without downloading one."""

    def __init__(self, n):
        self.n, self.mask_token_id, self.pad_token_id, self.all_special_ids = n, n - 1, 1, [0, 1, 2, 3, n - 1]

    def __len__(self):
        return self.n


def bench(name: str, args) -> dict:
    import deepspeed
    from transformers import LukeConfig

    from pretrain.config import PretrainConfig, derive
    from pretrain.data import PretrainingData, TrainLoader
    from pretrain.masking import MaskingCollator
    from pretrain.model import MLukeForPretraining
    from pretrain.trainer import flops_per_token, init_distributed, lr_lambda, make_optimizer, peak_flops

    rank, world, _, device = init_distributed()
    sizes = SIZES[name]
    entity_vocab = args.entity_vocab if name != "tiny" else 1000
    cfg = PretrainConfig(run_dir="unused")
    cfg.trainer.micro_batch_size = cfg.trainer.global_batch_size = args.micro_batch
    cfg.trainer.precision = args.precision
    cfg.deepspeed.zero_stage = args.zero
    d = derive(cfg, world, device.type)
    config = LukeConfig(**sizes, entity_vocab_size=entity_vocab + 1, entity_emb_size=256 if name != "tiny" else 32,
                        max_position_embeddings=514, type_vocab_size=1, use_entity_aware_attention=False,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2)
    model = MLukeForPretraining(config)
    optimizer = make_optimizer(model, cfg, 1e-4, device)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(10, 10_000))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched, config=d.deepspeed,
                                           dist_init_required=False)
    with tempfile.TemporaryDirectory() as tmp:
        in_memory = synthetic_dataset(Path(tmp), sizes["vocab_size"], entity_vocab, args.seq_len,
                                      args.micro_batch * (args.steps + 3) // 2 + 8, args.in_memory)
        if in_memory:
            data = object.__new__(PretrainingData)
            data.dir, data.metadata, data.datasets, data.languages = Path(tmp), {}, in_memory, list(in_memory)
            data.num_eval = {lang: 0 for lang in in_memory}
            data.num_train = {lang: len(d) for lang, d in in_memory.items()}
            data.fingerprint = "in-memory"
        else:
            data = PretrainingData(tmp, eval_examples=0)
        collator = MaskingCollator.from_tokenizer(FakeTokenizer(sizes["vocab_size"]))
        loader = TrainLoader(data, lambda rows, seed: collator(rows, generator=seed), args.micro_batch, rank,
                             world, 0, 0.7, prefetch=8)
        it = iter(loader)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times = {"data": [], "fwd_bwd": [], "optimizer": []}
        tokens = []
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch, _ = next(it)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync()
            t1 = time.perf_counter()
            out = engine(batch)
            engine.backward(out.loss)
            sync()
            t2 = time.perf_counter()
            engine.step()
            sync()
            t3 = time.perf_counter()
            if step >= args.warmup:
                times["data"].append(t1 - t0)
                times["fwd_bwd"].append(t2 - t1)
                times["optimizer"].append(t3 - t2)
                tokens.append(int(batch["attention_mask"].sum() + batch["entity_attention_mask"].sum()))
    step_time = {k: float(np.mean(v)) for k, v in times.items()}
    total = sum(step_time.values())
    row = {
        "config": name, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "params_M": model.num_parameters() / 1e6, "micro_batch": args.micro_batch, "seq_len": args.seq_len,
        "precision": d.precision, "zero": args.zero, "step_s": total,
        **{f"{k}_s": v for k, v in step_time.items()},
        "data_pct": 100 * step_time["data"] / total,
        "tokens_per_s": float(np.mean(tokens)) / total,
    }
    if device.type == "cuda":
        row["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    peak = peak_flops(device)
    if peak:
        row["mfu_pct"] = 100 * flops_per_token(config, args.seq_len + 32) * row["tokens_per_s"] / peak
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["tiny", "base"], choices=list(SIZES))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--entity-vocab", type=int, default=100_000, help="entity table rows (mLUKE: 1.2M)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--zero", type=int, default=1)
    p.add_argument("--in-memory", action="store_true", help="rows from Python lists instead of Arrow files")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    rows = [bench(name, args) for name in args.configs]
    keys = ["config", "device", "params_M", "micro_batch", "seq_len", "precision", "step_s", "data_s", "fwd_bwd_s",
            "optimizer_s", "data_pct", "tokens_per_s", "mfu_pct", "max_mem_gib"]
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
