"""The training loop: DeepSpeed engine, the two mLUKE stages, exact resume, preemption, logging.

`run(cfg)` is everything `launch/pretrain.py` does after Hydra has built the config. It reads
top to bottom: distributed setup → data → model (init / resume) → engine → loop → export.
Checkpointing and metric sinks live in pretrain/callbacks.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from . import callbacks
from .config import ConfigError, PretrainConfig, derive, validate
from .data import DataError, PretrainingData, TrainLoader, eval_batches

log = logging.getLogger("pretrain")

# Parameters that train in stage 1 (the reference's --fix-bert-weights keeps exactly
# `entity_embeddings` and `entity_predictions` trainable; the entity decoder is tied to the
# entity embeddings).
ENTITY_SIDE = ("luke.entity_embeddings.", "entity_predictions.")
# bf16 dense peak FLOP/s per GPU, for MFU (first matching name wins: the PCIe/NVL variants first).
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
              "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "V100": 125e12}


class TrainingError(Exception):
    """The run cannot continue (e.g. repeated non-finite losses); one line for the user."""


# ---------------------------------------------------------------- setup


def init_distributed() -> tuple[int, int, int, torch.device]:
    """Works under the deepspeed launcher, torchrun and plain `python` (one process)."""
    import deepspeed

    if "RANK" not in os.environ:  # plain python: a world of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", auto_mpi_discovery=False)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), local_rank, device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_logging(run_dir: Path, rank: int) -> None:
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
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """In place over all ranks. Pass tensors on the training device (CUDA under NCCL: no copies); a CPU
    tensor also works under NCCL, which reduces only CUDA tensors, at the price of two copies and a sync."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        if "nccl" in str(dist.get_backend()) and t.device.type != "cuda":
            on_gpu = t.cuda()
            dist.all_reduce(on_gpu, op=op)
            t.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(t, op=op)
    return t


# ---------------------------------------------------------------- model


def build_model(cfg: PretrainConfig, data: PretrainingData, resume_from: Path | None, run_dir: Path, rank: int):
    """The model to train, and a one-line description of where its weights come from."""
    from transformers import LukeConfig

    from .model import MLukeForPretraining

    if resume_from is not None:  # weights come from the checkpoint; only the architecture is needed
        config = LukeConfig.from_json_file(str(resume_from / "model_config.json"))
        return MLukeForPretraining(config), f"checkpoint {resume_from}"
    source = cfg.model.init_from
    path = Path(source)
    entity_aware = cfg.model.use_entity_aware_attention
    if (path / "checkpoints").is_dir() or (path / "trainer_state.json").is_file():
        return _from_run(path, entity_aware)
    if path.is_dir() and _model_type(path) == "luke":
        from .export import load_pretrained

        return load_pretrained(path, use_entity_aware_attention=entity_aware), f"exported model {path}"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"model.init_from={source}: expected a directory (XLM-R, export, run or checkpoint)")
    if path.is_dir() and _model_type(path) not in (None, "xlm-roberta"):
        raise ConfigError(f"model.init_from={source}: config.json has model_type={_model_type(path)!r}, "
                          "expected xlm-roberta, luke, or a pretraining run directory")
    return _from_xlmr(cfg, source, data), f"XLM-R {source}"


def _model_type(path: Path) -> str | None:
    f = path / "config.json"
    return json.loads(f.read_text()).get("model_type") if f.is_file() else None


def _from_run(path: Path, entity_aware: bool):
    """A stage-1 run directory (its export, else its latest complete checkpoint) or one checkpoint."""
    from transformers import LukeConfig

    from .model import MLukeForPretraining

    if (path / "export").is_dir() and _model_type(path / "export") == "luke":
        from .export import load_pretrained

        # The export switches entity-aware attention on for fine-tuning; keep this run's setting.
        return load_pretrained(path / "export", use_entity_aware_attention=entity_aware), f"export of run {path}"
    ckpt = path if (path / "trainer_state.json").is_file() else callbacks.latest_complete_checkpoint(path)
    if ckpt is None or callbacks.checkpoint_problem(ckpt):
        raise ConfigError(f"model.init_from={path}: no export/ and no complete checkpoint in it")
    model = MLukeForPretraining(LukeConfig.from_json_file(str(ckpt / "model_config.json")))
    _load_weights(model, consolidated_state_dict(ckpt))
    return model, f"checkpoint {ckpt}"


def consolidated_state_dict(ckpt: Path) -> dict:
    """fp32 weights of a checkpoint, whatever the ZeRO stage and number of ranks that wrote it."""
    ds_dir = ckpt / callbacks.DS_TAG
    # The module copy (not written under ZeRO-3) holds every parameter in the training dtype,
    # frozen ones included, which ZeRO-1 keeps nowhere else ...
    state = {}
    if (ds_dir / "mp_rank_00_model_states.pt").is_file():
        states = torch.load(ds_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        state = {k: v.float() for k, v in states["module"].items() if v.numel()}
    # Under bf16 DeepSpeed names the optimizer shards bf16_zero_pp_rank_*: both forms must match, else a
    # bf16 run would export its bf16-rounded module copy (ZeRO-1/2) or nothing at all (ZeRO-3).
    if any(ds_dir.glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # ... and the optimizer's fp32 master copy is exact for the trained ones (ZeRO-2/3 add the
        # frozen ones, in the training dtype).
        fp32 = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=callbacks.DS_TAG)
        state.update({k: v.float() for k, v in fp32.items()})
    return state


def _load_weights(model, state_dict: dict) -> None:
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {"lm_head.decoder.weight", "entity_predictions.decoder.weight", "lm_head.bias", "lm_head.decoder.bias"}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ConfigError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()


def _from_xlmr(cfg: PretrainConfig, source: str, data: PretrainingData):
    from transformers import AutoTokenizer

    from .init import init_from_xlmr

    try:  # the data must be tokenized with this XLM-R's tokenizer
        words = AutoTokenizer.from_pretrained(source).get_vocab()
    except (OSError, ValueError):
        words = None  # no tokenizer beside the weights: the vocabulary size check must do
    if words is not None and words != AutoTokenizer.from_pretrained(str(data.dir / "tokenizer")).get_vocab():
        raise DataError(f"{data.dir / 'tokenizer'}: the data was tokenized with another vocabulary than "
                        f"{source}'s; preprocess with tokenizer={source}")
    # The entity table has one more row than the vocabulary: [MASK2] (see pretrain/init.py).
    model = init_from_xlmr(
        source, entity_vocab_size=data.metadata["entity_vocab_size"] + 1, entity_emb_size=cfg.model.entity_emb_size,
        use_entity_aware_attention=cfg.model.use_entity_aware_attention, seed=cfg.seed,
    )
    # Recorded in the model config (so in checkpoints and exports) for the checks of later stages.
    for key in ("tokenizer_sha256", "entity_vocab_sha256"):
        if data.metadata.get(key):
            setattr(model.config, key, data.metadata[key])
    return model


def check_compatibility(metadata: dict, model_config, data_dir: Path) -> None:
    """The data's tokenizer and entity vocabulary must be the ones the model's tables index."""
    meta_file = data_dir / "dataset" / "metadata.json"
    n_words = metadata.get("tokenizer_vocab_size")
    if n_words is not None and n_words != model_config.vocab_size:
        raise DataError(
            f"{meta_file}: tokenizer has {n_words} ids but the model's word table has {model_config.vocab_size}; "
            "preprocess with the model's tokenizer (e.g. tokenizer=xlm-roberta-base) or pick the matching model"
        )
    n_entities = metadata.get("entity_vocab_size")
    # The table holds one extra row for [MASK2] (HF mLUKE's entity_vocab.json appends it).
    if n_entities is not None and model_config.entity_vocab_size != n_entities + 1:
        raise DataError(
            f"{meta_file}: entity vocabulary has {n_entities} ids but the model's entity table has "
            f"{model_config.entity_vocab_size} rows (vocabulary + [MASK2]); stage 2 must use the data "
            "(entity vocabulary) stage 1 used"
        )
    trained = getattr(model_config, "entity_vocab_sha256", None)
    if trained and metadata.get("entity_vocab_sha256") and trained != metadata["entity_vocab_sha256"]:
        raise DataError(f"{meta_file}: entity_vocab_sha256 differs from the one the model was trained with")
    trained = getattr(model_config, "tokenizer_sha256", None)
    if trained and metadata.get("tokenizer_sha256") and trained != metadata["tokenizer_sha256"]:
        raise DataError(f"{meta_file}: tokenizer_sha256 differs from the one the model was trained with")


def apply_stage(model, stage: str) -> int:
    """Freeze the word side for stage `entity`; returns the number of trainable parameters."""
    for name, p in model.named_parameters():
        p.requires_grad_(stage == "full" or name.startswith(ENTITY_SIDE))
    model.luke.pooler.requires_grad_(False)  # unused in pretraining (as in the reference)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_optimizer(model, cfg: PretrainConfig, lr: float, device: torch.device):
    """AdamW on trainable parameters; no weight decay on biases and LayerNorm (as the reference)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    # Frozen parameters (stage entity) stay out of the groups: DeepSpeed (ZeRO-2/3 included) saves them with
    # the module, in the training dtype; an empty group is dropped (ZeRO's flattening cannot take one).
    groups = [g for g in ({"params": decay, "weight_decay": cfg.optim.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    kwargs = dict(lr=lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    if cfg.deepspeed.offload_optimizer and device.type == "cuda":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    # An optimizer instance (not a DeepSpeed config-dict one) compiles nothing on CPU hosts.
    return torch.optim.AdamW(groups, fused=device.type == "cuda", **kwargs)


def lr_lambda(warmup: int, total: int):
    """Linear warmup over `warmup` steps, then linear decay to 0 at `total` (reference WarmupDecayLR)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def flops_per_token(config, seq_len: int) -> float:
    """PaLM (Chowdhery et al. 2022, App. B) as in nanoGPT: 6N + 12·L·H·S per token, N = non-embedding
    (encoder) parameters, S = word + entity sequence length. The heads run only at masked positions: see
    head_flops. In stage 1 frozen weights need no weight gradients, so this overstates its work (MFU there
    reads high by up to a third)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    n = layers * (4 * h * h + 2 * h * config.intermediate_size)
    if config.use_entity_aware_attention:
        n += layers * 3 * h * h
    return 6 * n + 12 * layers * h * seq_len


def head_flops(config, num_masked_words: int, num_masked_entities: int) -> float:
    """Forward + backward FLOPs of the two prediction heads, which run only at the masked positions: per
    masked word dense (H·H) + decoder (H·V); per masked entity dense (H·E) + decoder (E·V_entities).
    At base size with 1.2M entities one masked entity costs ~3× a token's encoder work: leaving the
    heads out would understate MFU by a large margin."""
    h, e = config.hidden_size, config.entity_emb_size
    return 6.0 * (num_masked_words * (h * h + h * config.vocab_size)
                  + num_masked_entities * (h * e + e * config.entity_vocab_size))


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


# ---------------------------------------------------------------- run


class _Preemption:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the next step boundary and exits 0.
    Repeated SIGTERMs are expected (SLURM signals every process and launchers forward it again);
    only a second Ctrl-C (SIGINT) stops at once."""

    def __init__(self):
        self.flag = False
        self.interrupts = 0
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.interrupts += signum == signal.SIGINT
        if self.interrupts >= 2:
            raise KeyboardInterrupt("second SIGINT")
        if not self.flag:
            log.warning(f"received signal {signum}: will checkpoint at the end of this step and exit")
        self.flag = True

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _resolve_resume(cfg: PretrainConfig, run_dir: Path) -> Path | None:
    if cfg.resume == "none":
        if callbacks.list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir} already has checkpoints; use resume=auto, or another run_dir")
        return None
    if cfg.resume == "auto":
        return callbacks.latest_complete_checkpoint(run_dir, warn=log.warning)
    path = Path(cfg.resume)
    problem = callbacks.checkpoint_problem(path) if path.is_dir() else "not a directory"
    if problem:
        raise ConfigError(f"resume={cfg.resume}: {problem}")
    return path


def _check_same_run(saved: dict, now: dict, ckpt: Path) -> None:
    """Resuming continues the same run: another stage is an error, other changes are reported."""
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


def run(cfg: PretrainConfig) -> dict:
    """Train as configured; returns a summary (final step, last losses, status)."""
    validate(cfg)
    rank, world, local_rank, device = init_distributed()
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir, rank)
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    d = derive(cfg, world, device.type, bf16_ok)
    torch.manual_seed(cfg.seed + rank)  # dropout differs per rank; restored exactly on resume

    if rank == 0:
        callbacks.remove_stale_tmp(run_dir)
    dist.barrier()
    resume_from = _resolve_resume(cfg, run_dir)
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    if resume_from is not None:  # before anything is built from the checkpoint
        _check_same_run(json.loads((resume_from / "trainer_state.json").read_text())["config"], resolved,
                        resume_from)

    data = PretrainingData(cfg.data.dir, cfg.data.languages, cfg.data.eval_examples)
    model, source = build_model(cfg, data, resume_from, run_dir, rank)
    check_compatibility(data.metadata, model.config, Path(cfg.data.dir))
    trainable = apply_stage(model, cfg.stage.name)
    log.info(f"model from {source}: {model.num_parameters():,} parameters, {trainable:,} trainable "
             f"(stage {cfg.stage.name}); world {world}, micro batch {cfg.trainer.micro_batch_size}, "
             f"grad accumulation {d.grad_accum}, precision {d.precision}, ZeRO {cfg.deepspeed.zero_stage}")

    import deepspeed

    optimizer = make_optimizer(model, cfg, d.lr, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(d.warmup_steps, cfg.trainer.max_steps))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=d.deepspeed, dist_init_required=False,
    )

    from transformers import AutoTokenizer

    from .masking import MaskingCollator

    tokenizer = AutoTokenizer.from_pretrained(str(Path(cfg.data.dir) / "tokenizer"))
    collator = MaskingCollator.from_tokenizer(
        tokenizer, mlm_prob=cfg.data.mlm_probability, mep_prob=cfg.data.mep_probability,
        max_mention_length=data.metadata.get("max_mention_length", 30),
    )
    collate = lambda rows, seed: collator(rows, generator=seed)  # noqa: E731
    loader = TrainLoader(data, collate, cfg.trainer.micro_batch_size, rank, world, cfg.seed,
                         cfg.data.sampling_alpha, cfg.data.prefetch, cfg.data.sample_languages_by == "batch")

    derived = {**asdict(d), "git_commit": git_commit(), "data_fingerprint": data.fingerprint,
               "model_source": source}
    step, counters = 0, {"bad_batches": 0, "tokens": 0}
    if resume_from is not None:
        state = callbacks.load_checkpoint(engine, resume_from, rank)
        loader.load_state_dict(state["data"])
        step, counters = state["step"], state["counters"]
        log.info(f"resumed from {resume_from} at step {step}")
    if rank == 0:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml({**resolved, "derived": derived}))

    def trainer_state() -> dict:
        return {"step": step, "data": loader.state_dict(), "counters": counters, "world_size": world,
                "config": resolved, "derived": derived}

    def checkpoint() -> Path:
        return callbacks.save_checkpoint(engine, run_dir, step, trainer_state(), model.config.to_json_string(),
                                         cfg.trainer.keep_checkpoints, rank)

    logger = (callbacks.MetricsLogger(run_dir, cfg, {**resolved, "derived": derived}, cfg.trainer.max_steps, step)
              if rank == 0 else None)
    preempt = _Preemption()
    languages = data.languages
    peak = peak_flops(device)
    # Running sums between log records: loss, n_micro, mlm (loss·n, correct, n), mep (same), word
    # tokens, entity tokens, then per-language (loss_mlm·n, n, loss_mep·n, n).
    n_lang = len(languages)
    # On the training device: adding a micro-batch's figures queues a kernel and never waits for the GPU;
    # the sums are read back only at log steps (one sync per log record, in _log_train).
    sums = torch.zeros(8 + 4 * n_lang, dtype=torch.float64, device=device)
    timer = callbacks.Timer()
    status, last = "finished", {}
    batches = iter(loader)
    bad_in_a_row = 0
    engine.train()
    try:
        while step < cfg.trainer.max_steps:
            micro = 0
            step_lr = scheduler.get_last_lr()[0]  # the rate this step's update uses
            while micro < d.grad_accum:
                t0 = time.perf_counter()
                batch, langs = next(batches)
                # Counted on the host copy: the same sums on the device would each cost a sync.
                words = int(batch["attention_mask"].sum())
                ents = int(batch["entity_attention_mask"].sum())
                seq = batch["input_ids"].shape[1] + batch["entity_ids"].shape[1]
                n_heads = (batch["mlm_labels"].numel(), batch["mep_labels"].numel() if "mep_labels" in batch else 0)
                if device.type == "cuda":  # a copy from pageable memory first waits for the GPU; pinned ones
                    batch = {k: v.pin_memory() for k, v in batch.items()}  # don't (not measurable on CPU hosts)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                timer.add("data", time.perf_counter() - t0)
                out = engine(batch)
                # Every rank must agree whether to skip (the backward is collective). The flag stays on the
                # device (NCCL reduces only CUDA tensors); reading it is the one host sync per micro-batch,
                # unavoidable since the decision must precede the backward.
                finite = all_reduce(torch.isfinite(out.loss.detach()).to(sums.dtype), dist.ReduceOp.MIN)
                if not finite.item():
                    counters["bad_batches"] += 1
                    bad_in_a_row += 1
                    log.warning(f"step {step + 1}: non-finite loss, batch skipped ({bad_in_a_row} in a row)")
                    if bad_in_a_row >= cfg.trainer.max_bad_steps:
                        raise TrainingError(
                            f"{bad_in_a_row} non-finite losses in a row at step {step + 1}: lower the learning "
                            "rate, use bf16/fp32, or resume from an earlier checkpoint"
                        )
                    continue
                bad_in_a_row = 0
                engine.backward(out.loss)
                engine.step()
                micro += 1
                nm, ne = out.num_mlm.to(sums.dtype), out.num_mep.to(sums.dtype)
                row = torch.stack([out.loss.detach().to(sums.dtype), torch.ones_like(nm),
                                   out.loss_mlm.detach().to(sums.dtype) * nm, out.acc_mlm.to(sums.dtype) * nm, nm,
                                   out.loss_mep.detach().to(sums.dtype) * ne, out.acc_mep.to(sums.dtype) * ne, ne])
                sums[:8] += row
                if len(set(langs)) == 1:
                    li = 8 + 4 * languages.index(langs[0])
                    sums[li:li + 4] += torch.stack([row[2], row[4], row[5], row[7]])  # (a list index would copy)
                counters["tokens"] += words + ents
                timer.add("words", words)
                timer.add("entities", ents)
                timer.add("flops", (words + ents) * flops_per_token(model.config, seq)
                          + head_flops(model.config, *n_heads))
            step += 1

            stop = all_reduce(torch.tensor([float(preempt.flag)], device=device), dist.ReduceOp.MAX).item() > 0
            if step % cfg.trainer.log_every == 0 or step == cfg.trainer.max_steps or stop:
                last = _log_train(engine, sums, timer, languages, step, world, peak, logger,
                                  {"train/lr": step_lr, "train/skipped_batches": counters["bad_batches"]})
                sums.zero_()
                timer.reset()
            t0 = time.perf_counter()  # evaluation and checkpoints are not training time (tokens/s, MFU)
            if cfg.trainer.eval_every and (step % cfg.trainer.eval_every == 0 or step == cfg.trainer.max_steps):
                _evaluate(engine, data, collate, cfg, rank, world, step, logger)
            if stop:
                checkpoint()
                status = "preempted"
                log.warning(f"checkpointed at step {step} after a signal; exiting")
                break
            if step % cfg.trainer.checkpoint_every == 0 or step == cfg.trainer.max_steps:
                checkpoint()
            timer.exclude(time.perf_counter() - t0)
    finally:
        batches.close()  # stops the prefetch thread before the interpreter may exit
        preempt.restore()
        if logger is not None:
            logger.close()

    if status == "finished" and cfg.trainer.export:
        export_dir = _export(engine, model, cfg, run_dir, rank)
        log.info(f"exported the model to {export_dir}")
    return {"status": status, "step": step, "last": last, "run_dir": str(run_dir)}


def _log_train(engine, sums, timer, languages, step, world, peak, logger, extra: dict) -> dict:
    """Reduce the running sums over ranks and write one record (rank 0)."""
    elapsed = timer.elapsed()
    times = torch.tensor([timer.totals.get(k, 0.0) for k in ("words", "entities", "data", "flops")] + [elapsed],
                         dtype=torch.float64, device=sums.device)
    total = all_reduce(torch.cat([sums, times])).tolist()  # the one host sync of the metrics
    s = total[: len(sums)]
    words, ents, data_time, flops, elapsed_sum = total[len(sums):]
    loss, n_micro, mlm_l, mlm_c, mlm_n, mep_l, mep_c, mep_n = s[:8]
    rec = {
        "step": step,
        "train/loss": loss / max(n_micro, 1),
        "train/loss_mlm": mlm_l / max(mlm_n, 1),
        "train/loss_mep": mep_l / max(mep_n, 1),
        "train/acc_mlm": mlm_c / max(mlm_n, 1),
        "train/acc_mep": mep_c / max(mep_n, 1),
        **extra,
    }
    norm = engine.get_global_grad_norm()
    if norm is not None:
        rec["train/grad_norm"] = float(norm)
    for i, lang in enumerate(languages):
        lm, ln, em, en = s[8 + 4 * i: 12 + 4 * i]
        if ln:
            rec[f"train/{lang}/loss_mlm"] = lm / ln
        if en:
            rec[f"train/{lang}/loss_mep"] = em / en
    wall = elapsed_sum / world  # mean wall time of the ranks
    rec["throughput/tokens_per_s"] = (words + ents) / wall
    rec["throughput/word_tokens_per_s"] = words / wall
    rec["throughput/data_wait_pct"] = 100.0 * data_time / elapsed_sum
    if peak:
        rec["throughput/mfu"] = flops / wall / (peak * world)
    if torch.cuda.is_available():
        rec["memory/max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if logger is not None:
        logger.log(rec)
        logger.progress(step, rec["train/loss"], rec["throughput/tokens_per_s"])
    return rec


@torch.no_grad()
def _evaluate(engine, data, collate, cfg, rank, world, step, logger) -> dict:
    """Masked word and entity accuracy (and loss) per language on the held-out slice."""
    langs = data.languages
    # mlm loss·n, correct, n; mep same. On the device, read back once (no sync per batch).
    sums = torch.zeros(len(langs), 6, dtype=torch.float64, device=engine.device)
    engine.eval()
    for lang, batch, real in eval_batches(data, collate, cfg.trainer.micro_batch_size, rank, world,
                                          cfg.seed, cfg.trainer.eval_batches):
        out = engine({k: v.to(engine.device) for k, v in batch.items()})
        if real:
            nm, ne = out.num_mlm.to(sums.dtype), out.num_mep.to(sums.dtype)
            sums[langs.index(lang)] += torch.stack([out.loss_mlm.to(sums.dtype) * nm, out.acc_mlm.to(sums.dtype) * nm,
                                                    nm, out.loss_mep.to(sums.dtype) * ne,
                                                    out.acc_mep.to(sums.dtype) * ne, ne])
    engine.train()
    sums = all_reduce(sums).cpu()
    rec = {"step": step}
    for i, lang in enumerate(langs):
        ml, mc, mn, el, ec, en = sums[i].tolist()
        if mn:
            rec[f"eval/{lang}/loss_mlm"], rec[f"eval/{lang}/acc_mlm"] = ml / mn, mc / mn
        if en:
            rec[f"eval/{lang}/loss_mep"], rec[f"eval/{lang}/acc_mep"] = el / en, ec / en
    t = sums.sum(0).tolist()
    if t[2]:
        rec["eval/acc_mlm"] = t[1] / t[2]
    if t[5]:
        rec["eval/acc_mep"] = t[4] / t[5]
    if logger is not None:
        logger.log(rec)
    return rec


def _export(engine, model, cfg, run_dir: Path, rank: int) -> Path:
    """RUN_DIR/export in HF format from the final checkpoint's fp32 weights (rank 0 writes)."""
    from .export import export_model
    from .model import MLukeForPretraining

    out = run_dir / "export"
    dist.barrier()
    if rank == 0:
        ckpt = callbacks.latest_complete_checkpoint(run_dir)
        fp32 = MLukeForPretraining(model.config)
        _load_weights(fp32, consolidated_state_dict(ckpt))
        export_model(fp32, out, data_dir=cfg.data.dir)
    dist.barrier()
    return out
