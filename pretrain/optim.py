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
    # the module; an empty group is dropped (ZeRO's flattening cannot take one).
    groups = [g for g in ({"params": decay, "weight_decay": cfg.optim.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    kwargs = dict(lr=lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    if cfg.deepspeed.offload_optimizer and device.type == "cuda":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, bias_correction=cfg.optim.bias_correction, **kwargs)
    if not cfg.optim.bias_correction:
        return AdamW(groups, bias_correction=False, **kwargs)
    # An optimizer instance (not a DeepSpeed config-dict one) compiles nothing on CPU hosts.
    return torch.optim.AdamW(groups, fused=device.type == "cuda", **kwargs)


class AdamW(torch.optim.Optimizer):
    """AdamW with bias correction optional, computed as DeepSpeed's FusedAdam does in AdamW mode:
    m = β1·m + (1-β1)·g, v = β2·v + (1-β2)·g², p -= lr·(m̂ / (√v̂ + ε) + wd·p), where m̂ = m / (1-β1^t) and
    v̂ = v / (1-β2^t) with bias correction, m̂ = m and v̂ = v without. The mLUKE recipe trains without it
    (its DeepSpeed configs set "bias_correction": false), which makes the early updates larger by
    (1-β1^t)/√(1-β2^t): ≈ 3.2× Adam's at step 1, 6.5× at step 10, 1.26× at step 1,000. torch's AdamW
    always corrects.
    (DeepSpeed's ZeRO accepts only known optimizer classes unless zero_allow_untested_optimizer is set:
    pretrain/config.py sets it when this class is used.)"""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 bias_correction: bool = True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                self.state[p]["step"] += 1
            m = [self.state[p]["exp_avg"] for p in params]
            v = [self.state[p]["exp_avg_sq"] for p in params]
            grads = [p.grad for p in params]
            (beta1, beta2), lr, t = group["betas"], group["lr"], self.state[params[0]]["step"]
            correction1 = 1 - beta1**t if group["bias_correction"] else 1.0
            correction2 = 1 - beta2**t if group["bias_correction"] else 1.0
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, correction2**0.5)
            torch._foreach_add_(denom, group["eps"])
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            torch._foreach_addcdiv_(params, m, denom, value=-lr / correction1)
        return loss


def warmup_decay(optimizer, warmup_steps: int, total_steps: int):
    """The reference's schedule, DeepSpeed's own WarmupDecayLR (warmup_type linear, from 0): step t of the
    scheduler (0 before the first optimizer step) gives lr·t/W while t < W, then lr·(T-t)/(T-W), where
    W = max(2, warmup_steps): the first two optimizer steps run at lr 0."""
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    class Schedule(WarmupDecayLR):
        def load_state_dict(self, state):
            super().load_state_dict(state)
            self.step(self.last_batch_iteration)  # DeepSpeed's restores the counter only, not the rate

    return Schedule(optimizer, total_num_steps=total_steps, warmup_min_lr=0.0,
                    warmup_max_lr=[g["lr"] for g in optimizer.param_groups],
                    warmup_num_steps=warmup_steps, warmup_type="linear")
