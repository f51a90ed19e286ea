"""Pretrain mLUKE. One process:  python launch/pretrain.py data.dir=OUT model.init_from=DIR run_dir=RUN
Several:  deepspeed [--num_gpus N | --hostfile H] launch/pretrain.py ...  or  torchrun --nproc_per_node N ...
Overrides: stage=entity|full deepspeed=zero1|zero2|zero3|zero3_offload experiment=quickstart|mluke_base|mluke_large
trainer.max_steps=N trainer.checkpoint_every=N trainer.log_every=N resume=auto|none|CKPT wandb.mode=... seed=N
(every key: pretrain/config.py)."""

import os
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
sys.path.insert(0, str(CONF.parent))

import hydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pretrain.cli import check_overrides  # noqa: E402
from pretrain.config import ConfigError, register, take_local_rank  # noqa: E402

sys.argv = take_local_rank(sys.argv)

register()


@hydra.main(config_path="../conf", config_name="pretrain", version_base=None)
def main(cfg) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        print(f"error: missing required setting(s): {', '.join(missing)} "
              "(e.g. data.dir=OUT model.init_from=xlm-roberta-base run_dir=runs/stage1)", file=sys.stderr)
        sys.exit(2)
    cfg = OmegaConf.to_object(cfg)
    # Heavy imports (torch, deepspeed) only now, so a bad override fails at once.
    from pretrain.data import DataError
    from pretrain.distributed import DistributedError
    from pretrain.trainer import TrainingError, run

    try:
        summary = run(cfg)
    except (ConfigError, DataError, DistributedError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary['status']} at step {summary['step']}; run directory {summary['run_dir']}")


if __name__ == "__main__":
    check_overrides(CONF, "pretrain", sys.argv[1:])  # a bad override: one line, before any work
    main()
