"""Forward + backward of MLukeForPretraining vs transformers.LukeForMaskedLM: same weights, same masked batch.

    python benchmarks/model_step.py                      # CPU: small encoder, real vocab (250,002) + 100k entities
    python benchmarks/model_step.py --gpu                # GPU: base size, bf16, seq 512 (also prints tokens/s, MFU)
    python benchmarks/model_step.py --hidden 768 --layers 12 ...   # any size (see --help)
    python benchmarks/model_step.py --smoke              # seconds: a tiny size, checks that it runs
    python benchmarks/model_step.py --check [--device cuda]   # equality with HF and between our two layouts

Each model runs in its own subprocess (clean peak-memory accounting), `--rounds` times, alternating, so
that a load change on a shared machine hits both; per model the fastest step of all rounds counts. Peak
memory is the peak *added* by a training step over the memory held before it (weights, batch): on CUDA
from the allocator's statistics, on CPU from the process RSS sampled every 0.5 ms during the first step.
Step times are wall times; on a busy machine compare the CPU times too (`cpu_speedup_vs_hf`, the process
CPU time of a step: less sensitive to other processes, most of all with `--threads 1`). The last line is
`speedup_vs_hf=... memory_ratio_vs_hf=... cpu_speedup_vs_hf=...`.

The rows are full length with the same number of entities, as packed pretraining data mostly is: no
padding. `--ragged` draws lengths and entity counts instead, which is where the unpadded layout (on CUDA
in bf16/fp16; `--padded` turns it off) saves work.

MFU is the trainer's (pretrain/metrics.py `batch_flops`, `mfu`): the PaLM formula (Chowdhery et al. 2022,
Appendix B; as in karpathy/nanoGPT) per word and entity token, plus the two prediction heads at the masked
positions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="base size, bf16, seq 512 on --device cuda")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda with --gpu, else cpu)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--vocab", type=int, default=250_002)
    p.add_argument("--entities", type=int, default=None, help="entity vocabulary size")
    p.add_argument("--entity-emb", type=int, default=256)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None, help="words per example")
    p.add_argument("--entity-len", type=int, default=None, help="entities per example")
    p.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up step; the fastest counts")
    p.add_argument("--rounds", type=int, default=None,
                   help="subprocess runs per model, alternating (default 2, smoke 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--ragged", action="store_true", help="rows of random length and entity count (padding)")
    p.add_argument("--padded", action="store_true", help="our model in the padded layout also on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (GPU)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing in our model")
    p.add_argument("--skip-hf", action="store_true", help="only our model (no ratios)")
    p.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak for MFU (default: by name)")
    p.add_argument("--profile", action="store_true", help="print the top kernels of one step (torch.profiler)")
    p.add_argument("--check", action="store_true",
                   help="instead of timing: ours vs HF on --device at a tiny size (fp32 equality, bf16/fp16 sanity)")
    p.add_argument("--smoke", action="store_true", help="a tiny size and one timed step (checks that it runs)")
    p.add_argument("--run", choices=["ours", "hf"], help=argparse.SUPPRESS)  # internal: one model per process
    a = p.parse_args(argv)
    if a.smoke:
        for k, v in dict(hidden=32, layers=2, heads=2, vocab=1000, entities=500, batch=2, seq=32, entity_len=4,
                         steps=1, rounds=1).items():
            setattr(a, k, v if getattr(a, k) in (None, p.get_default(k)) else getattr(a, k))
    gpu_defaults = dict(device="cuda", dtype="bf16", hidden=768, layers=12, heads=12, entities=1_200_000,
                        batch=16, seq=512, entity_len=128, steps=10, rounds=1)
    cpu_defaults = dict(device="cpu", dtype="fp32", hidden=256, layers=4, heads=4, entities=100_000,
                        batch=8, seq=128, entity_len=32, steps=3, rounds=2)
    for k, v in (gpu_defaults if a.gpu else cpu_defaults).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def build(a):
    import torch
    from transformers import LukeConfig

    from pretrain.masking import MaskingCollator
    from pretrain.model import MLukeForPretraining

    config = LukeConfig(
        vocab_size=a.vocab, entity_vocab_size=a.entities, hidden_size=a.hidden, entity_emb_size=a.entity_emb,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
        max_position_embeddings=a.seq + 2, type_vocab_size=1, layer_norm_eps=1e-5,
        use_entity_aware_attention=False,
    )
    torch.manual_seed(0)
    model = MLukeForPretraining(config)
    g = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(a.batch):  # full-length examples, as packed pretraining data is (unless --ragged)
        seq = int(torch.randint(a.seq // 2, a.seq + 1, (1,), generator=g)) if a.ragged else a.seq
        num_entities = int(torch.randint(0, a.entity_len + 1, (1,), generator=g)) if a.ragged else a.entity_len
        words = [0] + torch.randint(4, a.vocab - 1, (seq - 2,), generator=g).tolist() + [2]
        starts = torch.randint(1, seq - 6, (num_entities,), generator=g)
        spans = [[int(s), int(s) + int(w)] for s, w in zip(starts, torch.randint(1, 5, (num_entities,), generator=g))]
        rows.append({"word_ids": words, "entity_spans": spans,
                     "entity_ids": torch.randint(3, a.entities - 1, (num_entities,), generator=g).tolist()})
    batch = MaskingCollator(a.vocab, a.vocab - 1, [0, 1, 2, 3], max_mention_length=30)(rows, generator=0)
    return config, model, batch


def run_one(a) -> dict:
    """One model's warm-up + timed steps in this process; returns time per step and peak step memory."""
    import psutil
    import torch

    from pretrain.masking import hf_inputs

    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    device = torch.device(a.device)
    config, model, batch = build(a)
    if a.run == "hf":
        from transformers import LukeForMaskedLM

        state = model.state_dict()
        del model
        model = LukeForMaskedLM(config)
        model.load_state_dict(state, strict=True)
        del state
        inputs = hf_inputs(batch)
        step_fn = lambda m, b: m(**b).loss  # noqa: E731
    else:
        model.gradient_checkpointing = a.checkpointing
        model.unpad = False if a.padded else None
        inputs = batch
        step_fn = lambda m, b: m(b).loss  # noqa: E731
    model = model.to(device=device, dtype=dtype).train()
    inputs = {k: v.to(device) for k, v in inputs.items()}
    forward = torch.compile(model) if a.compile else model
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if a.dtype == "fp16":  # what a GradScaler would do, without the bookkeeping
        step = lambda: (step_fn(forward, inputs) * 1024.0).backward()  # noqa: E731
    else:
        step = lambda: step_fn(forward, inputs).backward()  # noqa: E731

    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() - before
    else:  # sample RSS during the first step
        proc, samples, done = psutil.Process(), [], threading.Event()
        before = proc.memory_info().rss

        def sample():
            while not done.is_set():
                samples.append(proc.memory_info().rss)
                time.sleep(0.0005)

        t = threading.Thread(target=sample)
        t.start()
        step()
        done.set()
        t.join()
        peak = max(samples + [proc.memory_info().rss]) - before
    model.zero_grad(set_to_none=True)
    times, cpu_times = [], []  # the fastest step: least disturbed by other processes on a shared machine
    for _ in range(a.steps):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        model.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    seconds = min(times)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
            sync()
        model.zero_grad(set_to_none=True)
        key = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"--- {a.run}: one step, top operators by {key}", file=sys.stderr)
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), file=sys.stderr)
    result = {"seconds": seconds, "cpu_seconds": min(cpu_times), "peak_bytes": peak, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    if a.run == "ours":
        from pretrain.metrics import batch_flops, peak_flops, token_counts

        result["peak_flops"] = a.peak_tflops * 1e12 if a.peak_tflops else peak_flops(device)
        result.update(flops=batch_flops(config, batch), **token_counts(batch))
    return result


def check(a) -> None:
    """Correctness on the benchmark's device: equality with HF in fp32 (entity-aware attention on and off,
    padded batch, activation checkpointing), finite losses close to fp32 in bf16 and fp16, and the unpadded
    layout against the padded one."""
    import torch
    from transformers import LukeConfig, LukeForMaskedLM

    from pretrain.masking import MaskingCollator, hf_inputs
    from pretrain.model import MLukeForPretraining, no_dropout

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(6):
        n = 20 + 7 * i
        words = [0] + torch.randint(4, 999, (n - 2,), generator=g).tolist() + [2]
        k = 1 + i % 4
        starts = torch.randint(1, n - 5, (k,), generator=g).tolist()
        rows.append({"word_ids": words, "entity_ids": torch.randint(3, 500, (k,), generator=g).tolist(),
                     "entity_spans": [[s, s + 1 + j % 3] for j, s in enumerate(starts)]})
    batch = MaskingCollator(1000, 999, [0, 1, 2, 3], max_mention_length=4)(rows, generator=0)
    batch = {k: v.to(device) for k, v in batch.items()}
    hf_batch = hf_inputs(batch)
    for entity_aware in (False, True):
        config = LukeConfig(vocab_size=1000, entity_vocab_size=500, hidden_size=128, entity_emb_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                            max_position_embeddings=80, type_vocab_size=1, use_entity_aware_attention=entity_aware)
        torch.manual_seed(0)
        ours = MLukeForPretraining(config).to(device).eval()
        hf = LukeForMaskedLM(config).to(device).eval()
        hf.load_state_dict(ours.state_dict(), strict=True)
        with torch.no_grad():
            out, ref = ours(batch), hf(**hf_batch)
            word_logits, entity_logits = ours.masked_logits(batch)
        diffs = {
            "loss_mlm": (out.loss_mlm - ref.mlm_loss).abs().item(),
            "loss_mep": (out.loss_mep - ref.mep_loss).abs().item(),
            "word_logits": (word_logits - ref.logits.view(-1, 1000)[batch["mlm_positions"]]).abs().max().item(),
            "entity_logits": (entity_logits - ref.entity_logits.view(-1, 500)[batch["mep_positions"]]).abs().max().item(),
        }
        print(f"fp32 entity_aware={entity_aware}: max |ours - hf| " + " ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
        assert max(diffs.values()) < 1e-4, diffs
        no_dropout(ours).train()  # compare gradients with and without checkpointing
        grads = []
        for ckpt in (False, True):
            ours.gradient_checkpointing = ckpt
            ours.zero_grad(set_to_none=True)
            ours(batch).loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in ours.parameters() if p.grad is not None]))
        print(f"  checkpointing: max grad diff {(grads[0] - grads[1]).abs().max().item():.2e}")
        assert torch.allclose(grads[0], grads[1], atol=1e-5)
        with torch.no_grad():
            full = ours(batch).loss.item()
        for dtype in (torch.bfloat16, torch.float16):
            half = MLukeForPretraining(config).to(device)
            half.load_state_dict(ours.state_dict())
            half = no_dropout(half.to(dtype)).train()
            loss = half(batch).loss
            loss.backward()
            finite = all(torch.isfinite(p.grad).all() for p in half.parameters() if p.grad is not None)
            print(f"  {dtype}: loss {loss.item():.4f} vs fp32 {full:.4f}, finite grads {finite}")
            assert finite and abs(loss.item() - full) < 0.05
        # The unpadded layout against the padded one, same weights and dtype: on CUDA in bf16/fp16 that is flash
        # attention over packed sequences against masked SDPA; elsewhere the same attention on other layouts.
        for dtype in (torch.float32, torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.float32,):
            results = []
            for unpad in (False, True):
                model = MLukeForPretraining(config).to(device)
                model.load_state_dict(ours.state_dict())
                model = no_dropout(model.to(dtype)).train()
                model.unpad = unpad
                out = model(batch)
                out.loss.backward()
                results.append((out.loss.item(), torch.cat([p.grad.double().flatten() for p in model.parameters()
                                                            if p.grad is not None])))
            (padded, padded_grads), (unpadded, unpadded_grads) = results
            cosine = torch.cosine_similarity(padded_grads, unpadded_grads, dim=0).item()
            print(f"  unpadded layout, {dtype}: loss {unpadded:.6f} vs padded {padded:.6f}, "
                  f"gradient cosine {cosine:.6f}")
            exact = dtype == torch.float32
            assert abs(unpadded - padded) < (1e-5 if exact else 0.02) and cosine > (1 - 1e-6 if exact else 0.99)
    print("check passed")


def main():
    a = parse_args()
    if a.check:
        check(a)
        return
    if a.run:
        print(json.dumps(run_one(a)))
        return
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, dict] = {}
    for _ in range(a.rounds):
        for which in ["ours"] + ([] if a.skip_hf else ["hf"]):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--run", which]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            best = results.setdefault(which, r)
            for key in ("seconds", "cpu_seconds", "peak_bytes"):
                best[key] = min(best[key], r[key])
            if a.profile:
                print(proc.stderr[proc.stderr.find("--- "):])

    from pretrain.metrics import mfu

    ours = results["ours"]
    words, tokens = ours["words"], ours["words"] + ours["entities"]
    print(f"device={ours['device']} dtype={a.dtype} hidden={a.hidden} layers={a.layers} heads={a.heads} "
          f"vocab={a.vocab} entities={a.entities} batch={a.batch} seq={a.seq} entity_len={a.entity_len} "
          f"padded/real tokens={ours['padded'] / tokens:.3f}")
    for name, r in results.items():
        print(f"{name:5s} step {r['seconds'] * 1000:9.1f} ms ({r['cpu_seconds'] * 1000:9.1f} ms CPU)   "
              f"peak step memory {r['peak_bytes'] / 2**20:9.1f} MiB   {words / r['seconds']:10.0f} word tokens/s")
    utilization = mfu(ours["flops"], ours["seconds"], ours["peak_flops"])
    print(f"ours: {tokens / ours['seconds']:.0f} tokens/s (words+entities), "
          f"{ours['flops'] / ours['seconds'] / 1e12:.2f} TFLOP/s"
          + (f", MFU {utilization:.1%}" if utilization is not None else " (MFU: peak unknown, pass --peak-tflops)"))
    if "hf" in results:
        hf = results["hf"]
        print(f"speedup_vs_hf={hf['seconds'] / ours['seconds']:.2f} "
              f"memory_ratio_vs_hf={ours['peak_bytes'] / max(hf['peak_bytes'], 1):.3f} "
              f"cpu_speedup_vs_hf={hf['cpu_seconds'] / ours['cpu_seconds']:.2f}")


if __name__ == "__main__":
    main()
