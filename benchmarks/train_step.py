"""Speed of the trainer's own optimizer step (`pretrain.trainer.Trainer.train_step`) on synthetic data of
the real shape: DeepSpeed engine, Arrow loader with its prefetch thread, masking collator, AdamW.

    python benchmarks/train_step.py                        # tiny and base on this machine (CPU: slow for base)
    python benchmarks/train_step.py --sizes base --micro-batch 32 --seq-len 512 --entities 128 \
        --entity-vocab 1200000 --precision bf16            # the mLUKE-base recipe's shapes, on a GPU
    python benchmarks/train_step.py --smoke                # seconds: the tiny size only

Per size it builds a synthetic preprocessing output (pretrain/standin.py: an XLM-R-sized tokenizer,
random full-length examples) and a randomly initialized XLM-R of that size, runs `--warmup` steps, then
times `--steps` steps; the figures are the trainer's own log record over the timed steps (tokens/s,
data-wait share, MFU on GPUs with the trainer's FLOPs count, peak memory). The last line is
`<size>_tokens_per_s=... <size>_step_s=... ...` for every size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # XLM-R sizes; tiny = the test/quickstart stand-in
    "tiny": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=1000),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, vocab_size=250_002),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, vocab_size=250_002),
}


def bench(size: str, args, tmp: Path) -> dict:
    import torch

    from pretrain.config import PretrainConfig
    from pretrain.standin import build_synthetic_output, build_synthetic_tokenizer, build_tiny_xlmr
    from pretrain.trainer import Trainer

    dims = dict(SIZES[size])
    vocab_size = dims.pop("vocab_size")
    tokenizer = build_synthetic_tokenizer(tmp / f"{size}-tokenizer", vocab_size)
    data = build_synthetic_output(tmp / f"{size}-data", tokenizer, args.entity_vocab, args.seq_len, args.entities,
                                  examples_per_language=args.micro_batch * (args.warmup + args.steps + 2))
    xlmr = build_tiny_xlmr(tmp / f"{size}-xlmr", tokenizer, max_position_embeddings=args.seq_len + 2, **dims)

    cfg = PretrainConfig(run_dir=str(tmp / f"{size}-run"))
    cfg.data.dir, cfg.data.eval_examples = str(data), 0
    cfg.model.init_from = str(xlmr)
    cfg.model.entity_emb_size = 256 if size != "tiny" else 32
    cfg.stage.name = args.stage
    cfg.deepspeed.zero_stage = args.zero
    t = cfg.trainer
    t.micro_batch_size = t.global_batch_size = args.micro_batch
    t.max_steps, t.precision = args.warmup + args.steps, args.precision
    t.eval_every, t.checkpoint_every, t.export, t.progress = 0, 10**9, False, False
    cfg.wandb.mode = "disabled"
    trainer = Trainer(cfg)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        trainer.train_step()
    sync()
    trainer.log_train(None)  # starts the sums and the clock afresh: only the timed steps count
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    rec = trainer.log_train(None)
    trainer.batches.close()
    row = {"step_s": seconds, "tokens_per_s": rec["throughput/tokens_per_s"],
           "data_wait_pct": rec["throughput/data_wait_pct"]}
    for key, name in (("throughput/mfu", "mfu"), ("memory/max_allocated_gib", "max_mem_gib")):
        if key in rec:
            row[name] = rec[key]
    print(f"{size}: {trainer.model.num_parameters() / 1e6:.1f}M parameters, {trainer.device}, "
          f"precision {trainer.derived.precision}, ZeRO {args.zero}, micro batch {args.micro_batch} x "
          f"({args.seq_len} words + {args.entities} entities): "
          + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=list(SIZES))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128, help="words per example, <s> and </s> included")
    p.add_argument("--entities", type=int, default=32, help="entities per example")
    p.add_argument("--entity-vocab", type=int, default=100_000, help="entity vocabulary size (mLUKE: 1.2M)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--zero", type=int, default=1, choices=[0, 1, 2, 3])
    p.add_argument("--stage", default="full", choices=["entity", "full"])
    p.add_argument("--smoke", action="store_true", help="tiny size, two steps: checks that the benchmark runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps, args.warmup, args.entity_vocab, args.seq_len, args.entities = (
            ["tiny"], 2, 1, 1000, 64, 8)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if _has_cuda() else "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            figures.update({f"{size}_{k}": v for k, v in bench(size, args, Path(tmp)).items()})
    print(" ".join(f"{k}={v:.4g}" for k, v in figures.items()))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
