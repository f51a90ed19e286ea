"""The GPU check in one go: the real trainer through the `deepspeed` launcher on one GPU, at mLUKE-base size
(XLM-R base, 1.2M entities, 512 words + 128 entities per example, bf16), once per ZeRO stage, plus a few fp16
steps with loss scaling and the model step eager vs compiled.

    python benchmarks/gpu_check.py                 # on a GPU machine: about 5-8 minutes
    python benchmarks/gpu_check.py --smoke         # a tiny size on the CPU, ZeRO-1 only: checks that it runs

For each ZeRO stage it prints the trainer's own log record over the timed steps (metrics.jsonl: tokens/s,
MFU with the trainer's FLOPs count, peak memory, data-wait share, padded tokens per real token). The data
are synthetic but shaped like a real run's (pretrain/standin.py), the XLM-R is randomly initialized (no hub
needed). The last line is `zero1_tokens_per_s=... zero1_mfu=... ... fp16_finite=1 compile_speedup=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECORD = {"tokens_per_s": "throughput/tokens_per_s", "mfu": "throughput/mfu", "peak_gib": "memory/max_allocated_gib",
          "data_wait_pct": "throughput/data_wait_pct", "padded_per_real": "throughput/padded_per_real_token"}


def build(tmp: Path, args) -> tuple[Path, Path]:
    from pretrain.standin import build_synthetic_output, build_synthetic_tokenizer, build_tiny_xlmr

    t0 = time.perf_counter()
    tokenizer = build_synthetic_tokenizer(tmp / "tokenizer", args.vocab)
    examples = args.micro_batch * (args.warmup + args.steps + 1)
    data = build_synthetic_output(tmp / "data", tokenizer, args.entity_vocab, args.seq_len, args.entities, examples)
    xlmr = build_tiny_xlmr(tmp / "xlmr", tokenizer, hidden_size=args.hidden, num_layers=args.layers,
                           num_heads=args.hidden // 64 if args.hidden >= 64 else 2, intermediate_size=4 * args.hidden,
                           max_position_embeddings=args.seq_len + 2)
    print(f"synthetic data and XLM-R built in {time.perf_counter() - t0:.0f} s", flush=True)
    return data, xlmr


def train(tmp: Path, name: str, data: Path, xlmr: Path, args, *overrides: str) -> dict:
    """One run of launch/pretrain.py through the deepspeed launcher; the log record of the timed steps."""
    from pretrain.distributed import free_port

    run_dir = tmp / name
    deepspeed = Path(sys.executable).parent / "deepspeed"
    cmd = [str(deepspeed) if deepspeed.exists() else "deepspeed", "--num_gpus", "1", "--master_port",
           str(free_port()), str(REPO / "launch" / "pretrain.py"), "experiment=mluke_base", f"data.dir={data}",
           f"model.init_from={xlmr}", f"run_dir={run_dir}", f"model.entity_emb_size={args.entity_emb}",
           f"trainer.max_steps={args.warmup + args.steps}", f"trainer.log_every={args.warmup}",
           f"trainer.micro_batch_size={args.micro_batch}", f"trainer.global_batch_size={args.micro_batch}",
           "trainer.eval_every=0", "trainer.export=false", "trainer.checkpoint_every=1000000",
           "trainer.progress=false", "wandb.mode=disabled", "data.eval_examples=0", *overrides]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "train/loss" in r][-1]  # the steps after the first log: warmed up
    row = {k: last[key] for k, key in RECORD.items() if key in last}
    row.update(loss=last["train/loss"], skipped_steps=last.get("train/skipped_steps", 0))
    print(f"{name}: {time.perf_counter() - t0:.0f} s; " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()),
          flush=True)
    return row


def model_step(args, compile_: bool) -> float:
    """Seconds per step of benchmarks/model_step.py (ours only) at this check's sizes."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "model_step.py"), "--skip-hf", "--hidden", str(args.hidden),
           "--layers", str(args.layers), "--heads", str(max(2, args.hidden // 64)), "--vocab", str(args.vocab),
           "--entities", str(args.entity_vocab), "--entity-emb", str(args.entity_emb), "--batch",
           str(args.micro_batch), "--seq", str(args.seq_len), "--entity-len", str(args.entities), "--steps", "3"]
    if args.device == "cuda":
        cmd += ["--gpu", "--dtype", "bf16"]
    if compile_:
        cmd.append("--compile")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"model_step failed:\n{(done.stdout + done.stderr)[-3000:]}")
    match = re.search(r"^ours\s+step\s+([0-9.]+) ms", done.stdout, re.MULTILINE)
    return float(match.group(1)) / 1000


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zero", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=10, help="timed steps per run, after --warmup steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite runs this)")
    args = p.parse_args(argv)
    import torch

    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = dict(hidden=768, layers=12, vocab=250_002, entity_vocab=1_200_000, entity_emb=256, seq_len=512,
                 entities=128)
    if args.smoke:
        sizes = dict(hidden=32, layers=2, vocab=1000, entity_vocab=500, entity_emb=32, seq_len=64, entities=8)
        args.zero, args.steps, args.warmup, args.micro_batch = [1], 2, 1, 4
    vars(args).update(sizes)
    os.environ.setdefault("DS_ACCELERATOR", args.device)
    gpu = args.device == "cuda"
    precision = ["trainer.precision=bf16" if gpu else "trainer.precision=fp32"]
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, xlmr = build(tmp, args)
        for zero in args.zero:
            row = train(tmp, f"zero{zero}", data, xlmr, args, f"deepspeed=zero{zero}", *precision)
            figures.update({f"zero{zero}_{k}": v for k, v in row.items() if k != "loss"})
        if gpu:  # fp16 with dynamic loss scaling: a few steps must give finite losses
            row = train(tmp, "fp16", data, xlmr, args, "deepspeed=zero1", "trainer.precision=fp16")
            figures["fp16_finite"] = float(row["loss"] == row["loss"] and abs(row["loss"]) != float("inf"))
            figures["fp16_skipped_steps"] = row["skipped_steps"]
    eager = model_step(args, compile_=False)
    figures["model_step_s"] = eager
    if gpu:
        figures["compile_speedup"] = eager / model_step(args, compile_=True)
    print(" ".join(f"{k}={v:.4g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
