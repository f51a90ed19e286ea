"""Atomic, complete-or-absent training checkpoints: save, load, find the latest, prune; RNG state.

Layout (RUN_DIR/checkpoints/step_00000100/):
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
from pathlib import Path

import numpy as np
import torch

from .distributed import barrier

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
DS_TAG = "ds"
UNIVERSAL_TAG = "ds_universal"  # DeepSpeed's universal form of DS_TAG, made when the world size changes
PREFIX = "step_"
TRAINER_STATE = "trainer_state.json"
MODEL_CONFIG = "model_config.json"


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
    barrier()
    engine.save_checkpoint(str(tmp), tag=DS_TAG)
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1))
        (tmp / MODEL_CONFIG).write_text(model_config_json)
    barrier()
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
        prune(run_dir, keep)
    barrier()
    return final


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(engine, path: Path, rank: int, universal: bool = False) -> dict:
    """Collective. Restores engine state (weights, optimizer, schedule) and this rank's RNG; returns
    trainer_state.json. `universal`: the checkpoint was written by another number of ranks; DeepSpeed loads
    its universal form (see `make_universal`), and each rank keeps the generators it was seeded with (the
    old ranks' states do not map onto the new ones)."""
    tag = UNIVERSAL_TAG if universal else DS_TAG
    load_path, _ = engine.load_checkpoint(str(path), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load {path / tag}")
    if not universal:
        set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
    return read_trainer_state(path)


def make_universal(path: Path) -> Path:
    """Rank 0, once: DeepSpeed's universal checkpoint (one file per parameter with its fp32 weights and
    optimizer moments, loadable by any number of ranks) beside the checkpoint's ZeRO shards, written into a
    temporary directory and renamed into place when complete."""
    import subprocess
    import sys

    final = Path(path) / UNIVERSAL_TAG
    if final.is_dir():
        return final
    tmp = Path(path) / f".tmp-{UNIVERSAL_TAG}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info(f"converting {path / DS_TAG} to DeepSpeed's universal checkpoint (the number of ranks changed)")
    done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(Path(path) / DS_TAG), "--output_folder", str(tmp), "--inject_missing_state",
                           "--num_extract_workers", "1", "--num_merge_workers", "1"],
                          capture_output=True, text=True)
    if done.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckpointError(f"{path}: cannot convert it to a universal checkpoint for the new number of ranks "
                              f"({last}); resume with the original number of ranks")
    tmp.rename(final)
    return final


class CheckpointError(Exception):
    """A checkpoint that cannot be used as asked; one line for the user."""


def read_trainer_state(path: Path) -> dict:
    return json.loads((Path(path) / TRAINER_STATE).read_text())


def remove_stale_tmp(run_dir: Path) -> None:
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            log.warning(f"removing incomplete checkpoint {p} (interrupted while saving)")
            shutil.rmtree(p, ignore_errors=True)


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, by the `resume` setting: auto (the latest complete one in run_dir,
    if any), none (start fresh; an error if run_dir has checkpoints), or a checkpoint directory."""
    from .config import ConfigError

    if resume == "none":
        if list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir} already has checkpoints; use resume=auto, or another run_dir")
        return None
    if resume == "auto":
        return latest_complete_checkpoint(run_dir)
    path = Path(resume)
    problem = checkpoint_problem(path) if path.is_dir() else "not a directory"
    if problem:
        raise ConfigError(f"resume={resume}: {problem}")
    return path


def check_same_run(saved: dict, now: dict, ckpt: Path) -> None:
    """Resuming continues the same run: another stage is an error, other changed settings are reported."""
    from .config import ConfigError

    if saved["stage"]["name"] != now["stage"]["name"]:
        raise ConfigError(f"{ckpt} is a stage={saved['stage']['name']} run; stage={now['stage']['name']} needs "
                          f"its own run_dir (with model.init_from={ckpt.parent.parent})")

    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]

    old, new = dict(flat(saved)), dict(flat(now))
    changed = sorted(k for k in new.keys() | old.keys() if old.get(k) != new.get(k))
    if changed:
        log.warning("resuming with changed settings: "
                    + ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed))
