"""Typed configuration of pretraining (registered with Hydra as `pretrain_schema`).

One source of truth: the YAML files under conf/ only set fields declared here, so a mistyped
or unknown override fails before any work. Values that follow from others (gradient
accumulation, warmup, the DeepSpeed dict) are computed by `derive()` and saved with the run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

STAGES = ("entity", "full")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class ConfigError(Exception):
    """A setting the user must fix; reported as one line, without a traceback."""


@dataclass
class DataConfig:
    dir: str = MISSING  # preprocessing OUT (holds dataset/<lang>/, dataset/metadata.json, tokenizer/)
    languages: Optional[List[str]] = None  # default: every language in dataset/metadata.json
    # Language l is drawn with probability ∝ n_l^alpha (mLUKE: 0.7).
    sampling_alpha: float = 0.7
    # batch: one language per micro-batch (reference); example: each example drawn independently.
    sample_languages_by: str = "batch"
    # The last `eval_examples` examples of each language are held out for evaluation.
    eval_examples: int = 64
    prefetch: int = 8  # micro-batches prepared ahead by a background thread
    # Masking (mLUKE / LUKE defaults). mLUKE masks subword tokens; whole_word_masking masks whole words.
    mlm_probability: float = 0.15
    mep_probability: float = 0.15
    whole_word_masking: bool = False


@dataclass
class ModelConfig:
    # XLM-R hub name or directory (stage 1), a pretraining run dir / checkpoint, or an export dir
    # (pretrain/weights.py says how a path is recognised).
    init_from: str = MISSING
    entity_emb_size: int = 256
    # Entity-aware self-attention (separate queries per word/entity pair, as in LUKE); mLUKE
    # pretrains without it (Ri et al. 2022), so it is off by default.
    use_entity_aware_attention: bool = False
    # Recompute each encoder layer's activations in the backward pass: less memory, ~1/3 more compute.
    gradient_checkpointing: bool = False


@dataclass
class StageConfig:
    # entity: only the entity side trains (entity embeddings + entity prediction head, word side
    # frozen, as the reference's first stage with --fix-bert-weights); full: everything trains.
    name: str = "full"


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 1
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states + step on the CPU
    offload_param: bool = False  # ZeRO-3 only: parameters on the CPU too
    overlap_comm: bool = True
    # Extra keys merged last into the generated DeepSpeed dict (expert use).
    extra: Any = None


@dataclass
class LearningRates:
    entity: float = 5e-4  # reference mluke_base_stage1.json
    full: float = 1e-4  # reference mluke_base_stage2.json


@dataclass
class OptimConfig:
    lr: LearningRates = field(default_factory=LearningRates)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 2500
    grad_clip: float = 10000.0  # reference value; 0 disables clipping
    # Adam's bias correction of its moment estimates; the mLUKE recipe trains without it (its DeepSpeed
    # configs: "bias_correction": false), see pretrain/optim.py.
    bias_correction: bool = False


@dataclass
class TrainerConfig:
    max_steps: int = 1000  # optimizer steps
    global_batch_size: int = 2048  # sequences per optimizer step, all ranks together
    micro_batch_size: int = 4  # sequences per forward pass per rank
    # Mixed precision: fp32 weights (master copy, frozen ones never rounded), fp32 gradients accumulated and
    # reduced in fp32, matrix products in bf16/fp16 (torch autocast). auto: bf16 on a GPU that has it, else fp32.
    precision: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int = 1000  # 0 disables periodic evaluation
    eval_batches: int = 0  # 0 = the whole held-out slice
    max_bad_steps: int = 10  # consecutive steps with non-finite gradients (updates skipped) before stopping
    # Under SLURM, a run stopped by a signal requeues its job (scontrol requeue) to resume from its checkpoint.
    requeue: bool = True
    progress: bool = True
    export: bool = True  # write RUN_DIR/export (HF format) at the end


@dataclass
class WandbConfig:
    # online | offline | disabled; null = WANDB_MODE from the environment, else offline when
    # no WANDB_API_KEY is set (nothing ever waits on the network).
    mode: Optional[str] = None
    project: str = "mluke-pretrain"
    entity: Optional[str] = None
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class PretrainConfig:
    run_dir: str = MISSING
    seed: int = 42
    # auto: continue from the latest complete checkpoint in run_dir if any; none: start fresh
    # (fails if run_dir has checkpoints); or a path to one checkpoint directory.
    resume: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def take_local_rank(argv: list[str]) -> list[str]:
    """The deepspeed launcher appends --local_rank=N, which Hydra would reject: move it to LOCAL_RANK."""
    out, i = [], 0
    while i < len(argv):
        m = re.fullmatch(r"--local[_-]rank(?:=(\d+))?", argv[i])
        if m:
            value = m.group(1)
            if value is None and i + 1 < len(argv):
                value, i = argv[i + 1], i + 1
            os.environ.setdefault("LOCAL_RANK", str(value))
        else:
            out.append(argv[i])
        i += 1
    return out


def register() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)


# ---------------------------------------------------------------- derived values


@dataclass
class Derived:
    world_size: int
    grad_accum: int
    precision: str  # bf16 | fp16 | fp32
    lr: float
    warmup_steps: int
    deepspeed: dict


def validate(cfg: PretrainConfig) -> None:
    """Checks that need no data or model; run before any work."""
    if cfg.stage.name not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {cfg.stage.name!r}")
    if cfg.trainer.precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be one of {PRECISIONS}, got {cfg.trainer.precision!r}")
    if cfg.deepspeed.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"deepspeed.zero_stage must be 0..3, got {cfg.deepspeed.zero_stage}")
    if cfg.deepspeed.offload_param and cfg.deepspeed.zero_stage != 3:
        raise ConfigError("deepspeed.offload_param needs deepspeed.zero_stage=3")
    if cfg.wandb.mode not in (None, "online", "offline", "disabled"):
        raise ConfigError(f"wandb.mode must be online, offline or disabled, got {cfg.wandb.mode!r}")
    for key in ("max_steps", "global_batch_size", "micro_batch_size", "log_every", "checkpoint_every"):
        if getattr(cfg.trainer, key) <= 0:
            raise ConfigError(f"trainer.{key} must be positive, got {getattr(cfg.trainer, key)}")
    if cfg.trainer.keep_checkpoints < 1:
        raise ConfigError("trainer.keep_checkpoints must be at least 1")
    if cfg.data.sample_languages_by not in ("batch", "example"):
        raise ConfigError(f"data.sample_languages_by must be batch or example, got {cfg.data.sample_languages_by!r}")
    if not 0 < cfg.data.sampling_alpha <= 1:
        raise ConfigError(f"data.sampling_alpha must be in (0, 1], got {cfg.data.sampling_alpha}")


def derive(cfg: PretrainConfig, world_size: int, device_type: str, bf16_supported: bool = True) -> Derived:
    """Everything that follows from the config and the world: one place, saved with the run."""
    t = cfg.trainer
    per_step = t.micro_batch_size * world_size
    if t.global_batch_size % per_step:
        raise ConfigError(
            f"trainer.global_batch_size={t.global_batch_size} is not a multiple of "
            f"trainer.micro_batch_size={t.micro_batch_size} × world size {world_size}"
        )
    grad_accum = t.global_batch_size // per_step
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" and bf16_supported else "fp32"
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs a GPU; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device_type == "cuda" and not bf16_supported:  # e.g. V100, T4 (mluke_* set bf16)
        raise ConfigError("trainer.precision=bf16: this GPU has no bf16 support; use trainer.precision=fp16")
    ds = cfg.deepspeed
    zero: dict = {"stage": ds.zero_stage}
    if ds.zero_stage > 0:
        zero.update(overlap_comm=ds.overlap_comm and device_type == "cuda", contiguous_gradients=True)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device_type == "cuda"}
    if ds.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": device_type == "cuda"}
    ds_dict: dict = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        # Mixed precision through torch autocast: the module stays fp32, so gradients are accumulated and reduced
        # in fp32 and frozen weights are never rounded (DeepSpeed's own bf16/fp16 modes cast the whole module
        # and, with ZeRO-1/2, accumulate gradients in bf16). An empty list of "lower precision safe modules"
        # keeps every gradient reduction in fp32; fp16 gets a dynamic loss scaler from DeepSpeed.
        "torch_autocast": {"enabled": precision != "fp32", "dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(
            precision, "bfloat16"), "lower_precision_safe_modules": []},
        "steps_per_print": 1 << 30,  # our logger reports; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer:
        # We pass our own optimizer instance; allow a non-DeepSpeed one with offload on CPU-only hosts.
        ds_dict["zero_force_ds_cpu_optimizer"] = device_type == "cuda"
    if ds.zero_stage > 0 and not cfg.optim.bias_correction and not (ds.offload_optimizer and device_type == "cuda"):
        ds_dict["zero_allow_untested_optimizer"] = True  # pretrain/optim.py's AdamW (ZeRO knows torch's only)
    if ds.extra:
        ds_dict = _merge(ds_dict, dict(ds.extra))
    lr = cfg.optim.lr.entity if cfg.stage.name == "entity" else cfg.optim.lr.full
    warmup = min(cfg.optim.warmup_steps, t.max_steps)
    return Derived(world_size, grad_accum, precision, lr, warmup, ds_dict)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
