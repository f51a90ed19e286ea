"""What hangs off the training loop: atomic checkpoints and metric logging (jsonl, W&B, progress bar).

Checkpoint layout (RUN_DIR/checkpoints/step_00000100/):
    ds/...                 DeepSpeed engine state (model, optimizer, scheduler; every rank writes its shards)
    rng_rank{r}.pt         python/numpy/torch RNG states of rank r
    trainer_state.json     step, data loader state, counters, world size, resolved config (rank 0)
    model_config.json      the LukeConfig, so the checkpoint alone rebuilds the model
    COMPLETE               written last: {relative path: size} of every file above
A checkpoint is written into `.tmp-step_...` and renamed once COMPLETE is in it, so a directory
named step_* is whole; a file that no longer has its recorded size marks it truncated.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
DS_TAG = "ds"
PREFIX = "step_"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------- checkpoints


def checkpoint_problem(path: Path) -> str | None:
    """None if `path` is a complete checkpoint, else what is wrong with it."""
    marker = path / COMPLETE
    if not marker.is_file():
        return "no COMPLETE marker (interrupted while saving)"
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable {COMPLETE} marker ({e})"
    for rel, size in sizes.items():
        f = path / rel
        if not f.is_file():
            return f"missing file {rel}"
        if f.stat().st_size != size:
            return f"truncated file {rel} ({f.stat().st_size} of {size} bytes)"
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)), key=lambda p: p.name)


def latest_complete_checkpoint(run_dir: Path, warn=log.warning) -> Path | None:
    """The newest checkpoint that passes `checkpoint_problem`; broken newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warn(f"skipping checkpoint {path}: {problem}")
    return None


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(engine, run_dir: Path, step: int, trainer_state: dict, model_config_json: str,
                    keep: int, rank: int) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    engine.save_checkpoint(str(tmp), tag=DS_TAG)
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        (tmp / "model_config.json").write_text(model_config_json)
    _barrier()
    if rank == 0:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        marker = tmp / COMPLETE
        with open(marker, "w") as f:
            json.dump({"step": step, "files": files}, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # a re-save of the same step (e.g. final == last periodic)
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(engine, path: Path, rank: int) -> dict:
    """Collective. Restores engine state and this rank's RNG; returns trainer_state.json."""
    load_path, _ = engine.load_checkpoint(str(path), tag=DS_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load {path / DS_TAG}")
    rng_file = path / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        raise RuntimeError(f"{rng_file} missing: was the checkpoint written with a different number of ranks?")
    set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())


def remove_stale_tmp(run_dir: Path) -> None:
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            log.warning(f"removing incomplete checkpoint {p} (interrupted while saving)")
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- metrics


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


class Timer:
    """Wall time per phase since the last `reset` (for throughput and the data-wait share)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.totals: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (evaluation, checkpointing) out of the elapsed time."""
        self.start += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
