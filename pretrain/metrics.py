"""What a run records: per-rank log files, metric records (metrics.jsonl, W&B, progress bar), running
sums between records, phase timers, and the one FLOPs/MFU accounting used by the trainer and the
benchmarks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import torch

from .distributed import all_reduce

# bf16 dense peak FLOP/s per GPU, for MFU (first matching name wins: the PCIe/NVL variants first).
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
              "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "V100": 125e12}


# ---------------------------------------------------------------- run records


def setup_logging(run_dir: Path, rank: int) -> None:
    """Every rank logs to RUN_DIR/logs/rank{r}.log; rank 0 also prints INFO, the others only warnings."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    file_handler = logging.FileHandler(run_dir / "logs" / f"rank{rank}.log")
    file_handler.setFormatter(fmt)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for name in ("pretrain", "preprocessing"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = [file_handler, console]
        logger.propagate = False


def git_commit() -> str | None:
    """The commit of this checkout, saved with the run."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def wandb_mode(configured: str | None) -> str | None:
    """The mode to pass to wandb.init: the configured one; else None when WANDB_MODE is set (W&B reads
    it) or an API key is available; else offline, so nothing waits on the network."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return None
    return "offline"


class MetricsLogger:
    """Rank 0 only: appends records to RUN_DIR/metrics.jsonl and W&B, drives the progress bar."""

    def __init__(self, run_dir: Path, cfg, resolved: dict, max_steps: int, start_step: int):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = None
        mode = wandb_mode(cfg.wandb.mode)
        if mode != "disabled":
            import wandb

            id_file = Path(run_dir) / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            kwargs = {"mode": mode} if mode else {}
            self.wandb = wandb.init(
                project=cfg.wandb.project, entity=cfg.wandb.entity, name=cfg.wandb.name or Path(run_dir).name,
                tags=list(cfg.wandb.tags), dir=str(run_dir), config=resolved, id=run_id, resume="allow", **kwargs,
            )
        self.bar = None
        if cfg.trainer.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def progress(self, step: int, loss: float | None, tokens_per_s: float | None) -> None:
        if self.bar is None:
            return
        self.bar.n = step
        post = {}
        if loss is not None:
            post["loss"] = f"{loss:.4f}"
        if tokens_per_s is not None:
            post["tok/s"] = f"{tokens_per_s:,.0f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


# ---------------------------------------------------------------- sums and timers


class RunningSums:
    """Named sums between two log records, over all ranks.

    Values that live on the training device (losses, accuracies, counts the model returns) are added
    there with one small kernel and never waited for; host values (token counts of the host copy of a
    batch, seconds) are added on the host. `reduce` sums both over the ranks and reads them back: the one
    host synchronization of a log record. Every rank must declare the same names in the same order.
    """

    def __init__(self, device_names, host_names, device: torch.device):
        self.device_names, self.host_names = tuple(device_names), tuple(host_names)
        self._index = {name: i for i, name in enumerate(self.device_names)}
        self._device = torch.zeros(len(self.device_names), dtype=torch.float64, device=device)
        self._host = dict.fromkeys(self.host_names, 0.0)
        self._indices: dict[tuple[str, ...], torch.Tensor] = {}

    def add_device(self, values: dict[str, torch.Tensor]) -> None:
        self.add_vector(tuple(values), torch.stack([v.detach().to(self._device.dtype) for v in values.values()]))

    def add_vector(self, names: tuple[str, ...], values: torch.Tensor) -> None:
        """values[i] to sum names[i], in one kernel."""
        index = self._indices.get(names)
        if index is None:  # copied to the device once per set of names (a copy from the host can wait for it)
            index = self._indices[names] = torch.tensor([self._index[n] for n in names], device=self._device.device)
        self._device.index_add_(0, index, values.detach().to(self._device.dtype))

    def add_host(self, **values: float) -> None:
        for name, value in values.items():
            self._host[name] += value

    def reduce(self) -> dict[str, float]:
        host = torch.tensor([self._host[n] for n in self.host_names], dtype=torch.float64)
        total = all_reduce(torch.cat([self._device, host.to(self._device.device)])).tolist()
        return dict(zip(self.device_names + self.host_names, total))

    def reset(self) -> None:
        self._device.zero_()
        self._host = dict.fromkeys(self.host_names, 0.0)


HEADS = ("mlm", "mep")  # masked words, masked entities: the model's loss_/acc_/num_ outputs


def head_names(prefix: str = "") -> list[str]:
    """The running sums of the two heads: loss and correct predictions weighted by count, and the count."""
    return [f"{prefix}{h}_{k}" for h in HEADS for k in ("loss", "correct", "count")]


def head_sums(out, prefix: str = "") -> dict[str, torch.Tensor]:
    values = {}
    for h in HEADS:
        n = getattr(out, f"num_{h}").to(torch.float64)
        values.update({f"{prefix}{h}_loss": getattr(out, f"loss_{h}") * n,
                       f"{prefix}{h}_correct": getattr(out, f"acc_{h}") * n, f"{prefix}{h}_count": n})
    return values


class Timer:
    """Wall time since the last `reset`, minus time spent outside training (evaluation, checkpoints)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        self.start += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ---------------------------------------------------------------- FLOPs and MFU


def flops_per_token(config, seq_len: int) -> float:
    """PaLM (Chowdhery et al. 2022, App. B) as in nanoGPT: 6N + 12·L·H·S per token, N = non-embedding
    (encoder) parameters, S = word + entity sequence length (18·L·H·S with entity-aware attention, whose
    queries and keys are twice as wide). In stage 1 frozen weights need no weight gradients, so this
    overstates its work (MFU there reads high by up to a third)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    n = layers * (4 * h * h + 2 * h * config.intermediate_size)
    return 6 * n + (18 if config.use_entity_aware_attention else 12) * layers * h * seq_len


def head_flops(config, num_masked_words: int, num_masked_entities: int) -> float:
    """Forward + backward FLOPs of the two prediction heads, which run only at the masked positions: per
    masked word dense (H·H) + decoder (H·V); per masked entity dense (H·E) + decoder (E·V_entities).
    At base size with 1.2M entities one masked entity costs ~3× a token's encoder work: leaving the
    heads out would understate MFU by a large margin."""
    h, e = config.hidden_size, config.entity_emb_size
    return 6.0 * (num_masked_words * (h * h + h * config.vocab_size)
                  + num_masked_entities * (h * e + e * config.entity_vocab_size))


def batch_flops(config, batch: dict) -> float:
    """Training FLOPs of one collated micro-batch (pretrain/masking.py keys), counted on its host copy: the
    useful work, i.e. each example's real (unpadded) words and entities attending over that example's own
    length (what the unpadded layout computes; the padded layout does more), the entity embeddings'
    projection, entity-aware attention's extra queries (one per word, two per entity), and the heads at the
    masked positions. Equal to what torch.utils.flop_counter counts on a batch without padding, and on any
    batch in the unpadded layout (tests check both)."""
    h = config.hidden_size
    words, entities = batch["attention_mask"].sum(1), batch["entity_attention_mask"].sum(1)
    lengths = (words + entities).double()
    flops = float((lengths * flops_per_token(config, lengths)).sum())  # attention: sum of squared lengths
    words, entities = int(words.sum()), int(entities.sum())
    if config.entity_emb_size != h:
        flops += 6 * entities * config.entity_emb_size * h
    if config.use_entity_aware_attention:
        flops += 6 * config.num_hidden_layers * h * h * (words + 2 * entities)
    masked_entities = batch["mep_labels"].numel() if "mep_labels" in batch else 0
    return flops + head_flops(config, batch["mlm_labels"].numel(), masked_entities)


def token_counts(batch: dict) -> dict[str, int]:
    """Real words, real entities and padded positions (batch x (words + entities) columns) of a collated
    micro-batch, from its host copy. `padded / (words + entities)` is the padding overhead of the padded
    layout (the unpadded one computes on real tokens only)."""
    words, entities = batch["input_ids"].shape[1], batch["entity_ids"].shape[1]
    return {"words": int(batch["attention_mask"].sum()), "entities": int(batch["entity_attention_mask"].sum()),
            "padded": batch["input_ids"].shape[0] * (words + entities)}


def peak_flops(device: torch.device) -> float | None:
    """The accelerator's bf16 dense peak, None where unknown (CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def mfu(flops: float, seconds: float, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilization: achieved FLOP/s over the peak of all `world_size` accelerators."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / (peak * world_size)


# ---------------------------------------------------------------- records


def train_record(s: dict[str, float], step: int, languages, world_size: int, peak: float | None) -> dict:
    """A training log record from the reduced running sums of the trainer (see Trainer.sums)."""
    rec = {"step": step, "train/loss": s["loss"] / max(s["micro_batches"], 1)}
    rec.update({f"train/loss_{h}": s[f"{h}_loss"] / max(s[f"{h}_count"], 1) for h in HEADS})
    rec.update({f"train/acc_{h}": s[f"{h}_correct"] / max(s[f"{h}_count"], 1) for h in HEADS})
    rec.update({f"train/{lang}/loss_{h}": s[f"{lang}/{h}_loss"] / s[f"{lang}/{h}_count"]
                for lang in languages for h in HEADS if s[f"{lang}/{h}_count"]})
    wall = s["seconds"] / world_size  # mean wall time of the ranks
    rec["throughput/tokens_per_s"] = (s["words"] + s["entities"]) / wall
    rec["throughput/word_tokens_per_s"] = s["words"] / wall
    rec["throughput/data_wait_pct"] = 100.0 * s["data_seconds"] / s["seconds"]
    rec["throughput/padded_per_real_token"] = s["padded"] / max(s["words"] + s["entities"], 1)
    utilization = mfu(s["flops"], wall, peak, world_size)
    if utilization is not None:
        rec["throughput/mfu"] = utilization
    return rec


def eval_record(s: dict[str, float], step: int, languages) -> dict:
    """An evaluation record: masked word and entity loss and accuracy per language, and accuracy overall."""
    rec = {"step": step}
    for lang in languages:
        for h in HEADS:
            if s[f"{lang}/{h}_count"]:
                rec[f"eval/{lang}/loss_{h}"] = s[f"{lang}/{h}_loss"] / s[f"{lang}/{h}_count"]
                rec[f"eval/{lang}/acc_{h}"] = s[f"{lang}/{h}_correct"] / s[f"{lang}/{h}_count"]
    for h in HEADS:
        count = sum(s[f"{lang}/{h}_count"] for lang in languages)
        if count:
            rec[f"eval/acc_{h}"] = sum(s[f"{lang}/{h}_correct"] for lang in languages) / count
    return rec
