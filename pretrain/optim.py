"""What trains and how: the stage's trainable parameters, AdamW's parameter groups, the learning-rate
schedule."""

from __future__ import annotations

import torch

from .config import PretrainConfig

# Parameters that train in stage 1 (the reference's --fix-bert-weights keeps exactly
# `entity_embeddings` and `entity_predictions` trainable; the entity decoder is tied to the
# entity embeddings).
ENTITY_SIDE = ("luke.entity_embeddings.", "entity_predictions.")


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
