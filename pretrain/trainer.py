"""The training loop: the two mLUKE stages on a DeepSpeed engine, exact resume, preemption, logging.

`run(cfg)` is everything `launch/pretrain.py` does after Hydra has built the config: `Trainer(cfg)` sets
up (distributed → data → model → engine → loader), `Trainer.run()` loops over `train_step()` (one
optimizer step; the benchmarks call it too), logs, evaluates and checkpoints on schedule, and exports
at the end. Checkpoints live in pretrain/checkpoint.py, metrics and log records in pretrain/metrics.py,
weights in pretrain/weights.py, process groups and preemption signals in pretrain/distributed.py.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoint
from .config import PretrainConfig, derive, validate
from .data import PretrainingData, TrainLoader, check_fits, check_same_tokenizer, eval_batches
from .distributed import Preemption, all_reduce, barrier, init_distributed, requeue_slurm_job
from .metrics import (
    HEADS,
    MetricsLogger,
    RunningSums,
    Timer,
    batch_flops,
    eval_record,
    git_commit,
    head_names,
    head_sums,
    peak_flops,
    setup_logging,
    token_counts,
    train_record,
)
from .optim import apply_stage, make_optimizer, warmup_decay
from .weights import EXPORT, checkpoint_config, init_from_xlmr, load_model, resolve_source

log = logging.getLogger("pretrain")


class TrainingError(Exception):
    """The run cannot continue (e.g. repeated non-finite losses); one line for the user."""


# ---------------------------------------------------------------- model


def build_model(cfg: PretrainConfig, data: PretrainingData, resume_from: Path | None):
    """The model to train, and a one-line description of where its weights come from."""
    from .model import MLukeForPretraining

    if resume_from is not None:  # weights come from the checkpoint; only the architecture is needed
        model, source = MLukeForPretraining(checkpoint_config(resume_from)), f"checkpoint {resume_from}"
    else:
        src = resolve_source(cfg.model.init_from)
        source = src.description
        if src.kind == "xlmr":
            check_same_tokenizer(src.path, data.dir)
            # The entity table has one more row than the vocabulary: [MASK2] (see pretrain/weights.py).
            model = init_from_xlmr(src.path, entity_vocab_size=data.metadata.entity_vocab_size + 1,
                                   entity_emb_size=cfg.model.entity_emb_size,
                                   use_entity_aware_attention=cfg.model.use_entity_aware_attention, seed=cfg.seed)
            # Recorded in the model config (so in checkpoints and exports) for the checks of later stages.
            model.config.tokenizer_sha256 = data.metadata.tokenizer_sha256
            model.config.entity_vocab_sha256 = data.metadata.entity_vocab_sha256
        else:  # exports switch entity-aware attention on for fine-tuning; keep this run's setting
            model = load_model(src, use_entity_aware_attention=cfg.model.use_entity_aware_attention)
    model.gradient_checkpointing = cfg.model.gradient_checkpointing
    return model, source


# ---------------------------------------------------------------- the trainer


class Trainer:
    def __init__(self, cfg: PretrainConfig):
        validate(cfg)
        self.cfg = cfg
        self.rank, self.world, _, self.device = init_distributed()
        self.run_dir = run_dir = Path(cfg.run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(run_dir, self.rank)
        bf16_ok = self.device.type != "cuda" or torch.cuda.is_bf16_supported()
        self.derived = d = derive(cfg, self.world, self.device.type, bf16_ok)

        if self.rank == 0:
            checkpoint.remove_stale_tmp(run_dir)
        barrier()
        resume_from = checkpoint.resolve_resume(cfg.resume, run_dir)
        from omegaconf import OmegaConf

        self.resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
        universal = False
        if resume_from is not None:  # before anything is built from the checkpoint
            saved = checkpoint.read_trainer_state(resume_from)
            checkpoint.check_same_run(saved["config"], self.resolved, resume_from)
            universal = saved["world_size"] != self.world  # DeepSpeed reads such a checkpoint in universal form
            if universal:
                log.warning(f"{resume_from} was written by {saved['world_size']} ranks, this run has {self.world}: "
                            "resuming from its universal form (schedule, optimizer and data position continue)")
                if self.rank == 0:
                    checkpoint.make_universal(resume_from)
                barrier()
                d.deepspeed["checkpoint"] = {"load_universal": True}

        self.data = data = PretrainingData(cfg.data.dir, cfg.data.languages, cfg.data.eval_examples)
        self.model, source = build_model(cfg, data, resume_from)
        check_fits(data.metadata, self.model.config, cfg.data.dir)
        trainable = apply_stage(self.model, cfg.stage.name)
        # After the model is built (initialization seeds every rank alike): dropout differs per rank. A resumed
        # run restores each rank's generators from the checkpoint instead.
        torch.manual_seed(cfg.seed + self.rank)
        log.info(f"model from {source}: {self.model.num_parameters():,} parameters, {trainable:,} trainable "
                 f"(stage {cfg.stage.name}); world {self.world}, micro batch {cfg.trainer.micro_batch_size}, "
                 f"grad accumulation {d.grad_accum}, precision {d.precision}, ZeRO {cfg.deepspeed.zero_stage}")

        import deepspeed

        optimizer = make_optimizer(self.model, cfg, d.lr, self.device)
        scheduler = warmup_decay(optimizer, d.warmup_steps, cfg.trainer.max_steps)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=optimizer, lr_scheduler=scheduler, config=d.deepspeed,
            dist_init_required=False,
        )
        self.collate = self._make_collate()
        self.loader = TrainLoader(data, self._prepare, cfg.trainer.micro_batch_size, self.rank, self.world, cfg.seed,
                                  cfg.data.sampling_alpha, cfg.data.prefetch)
        self.derived_record = {**asdict(d), "git_commit": git_commit(), "data_fingerprint": data.fingerprint,
                               "model_source": source}
        self.step, self.counters = 0, {"skipped_steps": 0, "tokens": 0}
        if resume_from is not None:
            state = checkpoint.load_checkpoint(self.engine, resume_from, self.rank, universal)
            self.loader.load_state_dict(state["data"])
            self.step, self.counters = state["step"], {**self.counters, **state["counters"]}
            log.info(f"resumed from {resume_from} at step {self.step}")
        if self.rank == 0:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml({**self.resolved, "derived": self.derived_record}))
            if self.step < cfg.trainer.max_steps and (run_dir / EXPORT).exists():
                log.info(f"removing {run_dir / EXPORT}: the run trains on, so it no longer holds the final model")
                shutil.rmtree(run_dir / EXPORT)

        languages = data.languages
        self.sums = RunningSums(
            ["loss", "micro_batches", *head_names(), *(n for lang in languages for n in head_names(f"{lang}/"))],
            ["words", "entities", "padded", "flops", "data_seconds", "seconds"], self.device)
        self._language_names = {h: tuple(f"{lang}/{h}_{k}" for k in ("loss", "count") for lang in languages)
                                for h in HEADS}
        self.timer = Timer()
        self.peak = peak_flops(self.device)
        self.lr = self.scheduler.get_last_lr()[0]
        self.skipped_in_a_row = 0
        self.batches = None

    def _make_collate(self):
        from transformers import AutoTokenizer

        from preprocessing.contract import DataDir

        from .masking import MaskingCollator

        tokenizer = AutoTokenizer.from_pretrained(str(DataDir(self.cfg.data.dir).tokenizer))
        self.collator = collator = MaskingCollator.from_tokenizer(
            tokenizer, mlm_prob=self.cfg.data.mlm_probability, mep_prob=self.cfg.data.mep_probability,
            whole_word=self.cfg.data.whole_word_masking,
            max_mention_length=self.data.metadata.limits.max_mention_length,
        )
        return lambda rows, seed: collator(rows, generator=seed)

    def _prepare(self, rows, seed: int) -> tuple[dict, dict]:
        """In the loader's thread: a masked micro-batch, its host-side figures (counted here, on the host copy,
        so the training step reads nothing back from the device), and pinned memory on GPUs (a copy from
        pageable memory would wait for the GPU)."""
        batch = self.collate(rows, seed)
        facts = {**token_counts(batch), "flops": batch_flops(self.model.config, batch)}
        # each example's language, for the per-language losses of mixed micro-batches
        batch["languages"] = torch.tensor([self.data.languages.index(row["language"]) for row in rows])
        if self.device.type == "cuda":
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch, facts

    # -------------------------------------------------------------- one optimizer step

    def train_step(self) -> None:
        """grad_accum micro-batches, one optimizer step. Nothing here waits for the device: figures go to
        `self.sums`, read back at log steps. A step whose gradients are not finite is skipped by DeepSpeed
        (ZeRO 1-3, fp16); its micro-batches' figures are left out of the sums on the device."""
        if self.batches is None:
            self.batches = iter(self.loader)
            self.engine.train()
        self.lr = self.scheduler.get_last_lr()[0]  # the rate this step's update uses
        skipped = self.engine.skipped_steps
        for _ in range(self.derived.grad_accum):
            t0 = time.perf_counter()
            (batch, facts), _ = next(self.batches)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            self.sums.add_host(**facts, data_seconds=time.perf_counter() - t0)
            out = self.engine(batch)
            self.engine.backward(out.loss)
            self.engine.step()
            self.counters["tokens"] += facts["words"] + facts["entities"]
            self._add_outputs(out, batch)
        self.step += 1
        if self.engine.skipped_steps > skipped:  # (a host counter: DeepSpeed has already synchronized for it)
            self._skipped()
        else:
            self.skipped_in_a_row = 0

    def _skipped(self) -> None:
        """DeepSpeed skipped this step's update (non-finite gradients) and did not advance the schedule: advance
        it here, so that the rate stays a function of the step (and max_steps keeps its meaning)."""
        self.scheduler.step()
        self.counters["skipped_steps"] += 1
        self.skipped_in_a_row += 1
        log.warning(f"step {self.step}: non-finite gradients, update skipped ({self.skipped_in_a_row} in a row)")
        if self.skipped_in_a_row >= self.cfg.trainer.max_bad_steps:
            raise TrainingError(f"{self.skipped_in_a_row} steps in a row with non-finite gradients at step "
                                f"{self.step}: lower the learning rate, use bf16/fp32, or resume from an earlier "
                                "checkpoint")

    def _add_outputs(self, out, batch: dict) -> None:
        finite = torch.isfinite(out.loss.detach())  # a non-finite micro-batch counts nowhere (no sync: a mask)
        values = {"loss": out.loss, "micro_batches": torch.ones_like(out.loss), **head_sums(out)}
        self.sums.add_device({k: torch.where(finite, v.detach().to(torch.float64), 0.0) for k, v in values.items()})
        # Per language: each masked token's loss goes to its example's language.
        n = len(self.data.languages)
        for h, positions, width in (("mlm", "mlm_positions", "input_ids"), ("mep", "mep_positions", "entity_ids")):
            losses = getattr(out, f"token_loss_{h}").to(torch.float64)
            languages = batch["languages"][batch[positions] // max(1, batch[width].shape[1])]
            sums = torch.zeros(2, n, dtype=torch.float64, device=losses.device)
            sums[0].index_add_(0, languages, losses)
            sums[1].index_add_(0, languages, torch.ones_like(losses))
            self.sums.add_vector(self._language_names[h], torch.where(finite, sums.flatten(), 0.0))

    # -------------------------------------------------------------- the loop

    def run(self) -> dict:
        """Train to trainer.max_steps (or a signal); returns a summary (final step, last record, status)."""
        t = self.cfg.trainer
        logger = (MetricsLogger(self.run_dir, self.cfg, {**self.resolved, "derived": self.derived_record},
                                t.max_steps, self.step) if self.rank == 0 else None)
        preemption = Preemption()
        status, last = "finished", {}
        self.timer.reset()
        try:
            while self.step < t.max_steps:
                self.train_step()
                # All ranks stop at the same step, whichever got the signal.
                stop = all_reduce(torch.tensor([float(preemption.flag)], device=self.device),
                                  dist.ReduceOp.MAX).item() > 0
                final = self.step == t.max_steps
                if stop or final or self.step % t.log_every == 0:
                    last = self.log_train(logger)
                t0 = time.perf_counter()  # evaluation and checkpoints are not training time (tokens/s, MFU)
                if t.eval_every and (final or self.step % t.eval_every == 0):
                    self.evaluate(logger)
                if stop or final or self.step % t.checkpoint_every == 0:
                    self.save()
                self.timer.exclude(time.perf_counter() - t0)
                if stop:
                    status = "preempted"
                    log.warning(f"checkpointed at step {self.step} after a signal; exiting")
                    if self.rank == 0 and t.requeue:  # every rank's part of the checkpoint is written
                        outcome = requeue_slurm_job()
                        if outcome:
                            log.warning(outcome)
                    break
        finally:
            if self.batches is not None:
                self.batches.close()  # stops the prefetch thread before the interpreter may exit
            preemption.restore()
            if logger is not None:
                logger.close()
        if status == "finished" and t.export:
            log.info(f"exported the model to {self.export()}")
        return {"status": status, "step": self.step, "last": last, "run_dir": str(self.run_dir)}

    def log_train(self, logger: MetricsLogger | None) -> dict:
        """Reduce the running sums over ranks and write one record (rank 0)."""
        self.sums.add_host(seconds=self.timer.elapsed())
        s = self.sums.reduce()  # the one host sync of the metrics
        self.sums.reset()
        self.timer.reset()
        rec = train_record(s, self.step, self.data.languages, self.world, self.peak)
        rec.update({"train/lr": self.lr, "train/skipped_steps": self.counters["skipped_steps"]})
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            rec["train/grad_norm"] = float(norm)
        if torch.cuda.is_available():
            rec["memory/max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if logger is not None:
            logger.log(rec)
            logger.progress(self.step, rec["train/loss"], rec["throughput/tokens_per_s"])
        return rec

    @torch.no_grad()
    def evaluate(self, logger: MetricsLogger | None) -> dict:
        """Masked word and entity accuracy (and loss) per language on the held-out slice."""
        langs = self.data.languages
        sums = RunningSums([n for lang in langs for n in head_names(f"{lang}/")], [], self.device)
        self.engine.eval()
        for lang, batch, real in eval_batches(self.data, self.collate, self.cfg.trainer.micro_batch_size, self.rank,
                                              self.world, self.cfg.seed, self.cfg.trainer.eval_batches):
            out = self.engine({k: v.to(self.device) for k, v in batch.items()})
            if real:  # (a rank with nothing left repeats a batch: every rank runs the same forwards)
                sums.add_device(head_sums(out, f"{lang}/"))
        self.engine.train()
        rec = eval_record(sums.reduce(), self.step, langs)
        if logger is not None:
            logger.log(rec)
        return rec

    def save(self) -> Path:
        state = {"step": self.step, "data": self.loader.state_dict(), "counters": self.counters,
                 "world_size": self.world, "config": self.resolved, "derived": self.derived_record}
        return checkpoint.save_checkpoint(self.engine, self.run_dir, self.step, state,
                                          self.model.config.to_json_string(), self.cfg.trainer.keep_checkpoints,
                                          self.rank)

    def export(self) -> Path:
        """RUN_DIR/export in HF format from the final checkpoint's fp32 weights (rank 0 writes)."""
        from .export import export_checkpoint

        out = self.run_dir / EXPORT
        barrier()
        if self.rank == 0:
            export_checkpoint(checkpoint.latest_complete_checkpoint(self.run_dir), out, data_dir=self.cfg.data.dir)
        barrier()
        return out


def run(cfg: PretrainConfig) -> dict:
    """Train as configured; returns a summary (final step, last losses, status)."""
    return Trainer(cfg).run()
