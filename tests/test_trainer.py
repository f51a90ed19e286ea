"""The trainer on the tiny model, in this process (one rank, CPU/gloo, the real DeepSpeed engine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pretrain_fixture import ROOT, compose, pretrain_data, read_metrics, tiny_overrides  # noqa: F401

from pretrain import checkpoint
from pretrain.config import ConfigError, derive
from pretrain.optim import ENTITY_SIDE, warmup_decay
from pretrain.trainer import Trainer, TrainingError, run
from pretrain.weights import consolidated_state_dict


def train(data, run_dir, *extra):
    return run(compose(tiny_overrides(data, run_dir, *extra)))


def test_few_steps_lower_the_loss_and_write_the_run(pretrain_data, tmp_path):  # noqa: F811
    out = train(pretrain_data, tmp_path / "run", "trainer.max_steps=16", "optim.lr.full=5e-3",
                "trainer.eval_every=16", "trainer.checkpoint_every=8")
    assert out["status"] == "finished" and out["step"] == 16
    losses = [r["train/loss"] for _, r in sorted(read_metrics(tmp_path / "run").items())]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.25, losses
    records = read_metrics(tmp_path / "run").values()
    for key in ("train/loss_mlm", "train/loss_mep", "train/acc_mlm", "train/acc_mep", "train/lr",
                "train/grad_norm", "throughput/tokens_per_s"):
        assert all(key in r for r in records), key
    for key in ("train/en/loss_mlm", "train/de/loss_mep"):  # per language, from one-language micro-batches
        assert any(key in r for r in records), key
    evals = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "eval/" in line]
    assert len(evals) == 1 and '"eval/de/acc_mep"' in evals[0] and '"eval/en/acc_mlm"' in evals[0]
    # The rate each step used: the reference's warmup (at least 2 steps, from 0), then linear decay towards 0.
    assert [r["train/lr"] for _, r in sorted(read_metrics(tmp_path / "run").items())] == pytest.approx(
        [0, 0, 2.5e-3] + [5e-3 * (16 - t) / 14 for t in range(2, 15)], rel=1e-12)
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "grad_accum: 2" in config and "train_batch_size: 8" in config and f"dir: {pretrain_data}" in config
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")] == ["step_00000008", "step_00000016"]
    from transformers import LukeForMaskedLM

    hf = LukeForMaskedLM.from_pretrained(str(tmp_path / "run" / "export"))
    assert hf.config.entity_vocab_size == 18


def test_stage1_freezes_the_word_side_and_stage2_trains_it(pretrain_data, tmp_path):  # noqa: F811
    from pretrain.weights import init_from_xlmr

    start = init_from_xlmr(pretrain_data / "xlmr", entity_vocab_size=18, entity_emb_size=32, seed=42).state_dict()
    train(pretrain_data, tmp_path / "s1", "stage=entity", "trainer.max_steps=3", "optim.lr.entity=1e-2")
    s1 = consolidated_state_dict(checkpoint.latest_complete_checkpoint(tmp_path / "s1"))
    word_side = [k for k in s1 if not k.startswith(ENTITY_SIDE)]
    assert len(word_side) > 30
    for k in word_side:
        assert torch.equal(s1[k], start[k]), k
    assert not torch.equal(s1["luke.entity_embeddings.entity_embeddings.weight"],
                           start["luke.entity_embeddings.entity_embeddings.weight"])
    assert not torch.equal(s1["entity_predictions.transform.dense.weight"],
                           start["entity_predictions.transform.dense.weight"])

    train(pretrain_data, tmp_path / "s2", "stage=full", f"model.init_from={tmp_path / 's1'}",
          "trainer.max_steps=3", "optim.lr.full=1e-2", "deepspeed=zero2")
    s2 = consolidated_state_dict(checkpoint.latest_complete_checkpoint(tmp_path / "s2"))
    unchanged = [k for k in word_side if torch.equal(s2[k], s1[k])]
    # The pooler is unused in pretraining and stays frozen, as in the reference.
    assert unchanged == ["luke.pooler.dense.weight", "luke.pooler.dense.bias"]
    log = (tmp_path / "s2" / "logs" / "rank0.log").read_text()
    assert f"export of run {tmp_path / 's1'}" in log
    assert min(read_metrics(tmp_path / "s2")) == 1  # a new run: step, schedule and optimizer start afresh


def signal_after_step(monkeypatch, step: int, *signals: int) -> None:
    """Send real signals to this process right after optimizer step `step`, from the training thread itself:
    the handler runs before the loop goes on, and no helper thread can outlive the run and its handler."""
    original = Trainer.train_step

    def train_step(self):
        original(self)
        if self.step == step:
            for sig in signals:
                os.kill(os.getpid(), sig)
    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_lr_schedule_is_the_references_warmup_then_linear_decay_to_zero():
    # DeepSpeed's WarmupDecayLR as the mLUKE configs set it: the rate of optimizer step s is lr·(s-2)/W during
    # warmup (0 for the first two steps), then decays linearly to 0 at max_steps.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_decay(optimizer, warmup_steps=4, total_steps=10)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0])


def test_bf16_is_mixed_precision_and_never_rounds_the_frozen_word_side(pretrain_data, tmp_path):  # noqa: F811
    """A bf16 stage 1 computes in bf16 but keeps fp32 weights: its export's word side is XLM-R's, bit for bit,
    and stage 2 starts from exactly that."""
    from pretrain.weights import init_from_xlmr, load_exported

    args = ("stage=entity", "trainer.max_steps=2", "optim.lr.entity=1e-2")
    train(pretrain_data, tmp_path / "fp32", *args, "trainer.export=false")
    train(pretrain_data, tmp_path / "bf16", *args, "trainer.precision=bf16")
    fp32, bf16 = read_metrics(tmp_path / "fp32")[1]["train/loss"], read_metrics(tmp_path / "bf16")[1]["train/loss"]
    assert fp32 != bf16 and abs(fp32 - bf16) < 0.05 * fp32  # the products really ran in bf16
    start = init_from_xlmr(pretrain_data / "xlmr", entity_vocab_size=18, entity_emb_size=32, seed=42).state_dict()
    exported = load_exported(tmp_path / "bf16" / "export").state_dict()
    word_side = [k for k in start if not k.startswith(ENTITY_SIDE)]
    assert len(word_side) > 30 and all(torch.equal(exported[k], start[k]) for k in word_side)
    trainer = Trainer(compose(tiny_overrides(pretrain_data, tmp_path / "s2", "stage=full", "trainer.precision=bf16",
                                             f"model.init_from={tmp_path / 'bf16'}")))
    assert all(torch.equal(trainer.model.state_dict()[k], start[k]) for k in word_side)
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_sigterm_checkpoints_and_resume_is_bitwise_identical(pretrain_data, tmp_path, monkeypatch):  # noqa: F811
    args = ("trainer.max_steps=8", "trainer.global_batch_size=16", "trainer.micro_batch_size=2",
            "trainer.checkpoint_every=100", "trainer.export=false", "optim.lr.full=3e-3")
    train(pretrain_data, tmp_path / "full", *args)
    expected = read_metrics(tmp_path / "full")

    run_dir = tmp_path / "cut"
    with monkeypatch.context() as patch:
        signal_after_step(patch, 2, signal.SIGTERM, signal.SIGTERM)  # launchers forward it: twice is normal
        out = train(pretrain_data, run_dir, *args)
    assert out["status"] == "preempted" and out["step"] == 2
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == [f"step_{out['step']:08d}"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed after the run

    out = train(pretrain_data, run_dir, *args, "resume=auto")
    assert out["status"] == "finished"
    got = read_metrics(run_dir)
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 9):
        for key in ("train/loss", "train/loss_mlm", "train/loss_mep", "train/grad_norm", "train/lr"):
            assert got[step][key] == expected[step][key], (step, key)


def test_first_ctrl_c_checkpoints_and_a_second_one_stops_at_once(pretrain_data, tmp_path, monkeypatch):  # noqa: F811
    args = ("trainer.max_steps=4", "trainer.checkpoint_every=100", "trainer.export=false")
    with monkeypatch.context() as patch:
        signal_after_step(patch, 1, signal.SIGINT)
        out = train(pretrain_data, tmp_path / "once", *args)
    assert out["status"] == "preempted" and out["step"] == 1
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "once")] == ["step_00000001"]

    with monkeypatch.context() as patch:
        signal_after_step(patch, 1, signal.SIGINT, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            train(pretrain_data, tmp_path / "twice", *args)
    assert checkpoint.list_checkpoints(tmp_path / "twice") == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler removed after the run


def test_a_run_that_trains_on_drops_its_export_and_options_reach_the_model(pretrain_data, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    train(pretrain_data, run_dir, "trainer.max_steps=2")
    assert (run_dir / "export" / "config.json").is_file()
    trainer = Trainer(compose(tiny_overrides(pretrain_data, run_dir, "trainer.max_steps=4",
                                             "model.gradient_checkpointing=true", "data.whole_word_masking=true")))
    # Once the run trains past it, export/ would pass for the run's final model (model.init_from=RUN_DIR).
    assert not (run_dir / "export").exists() and trainer.step == 2
    assert trainer.model.gradient_checkpointing and trainer.collator.whole_word
    assert trainer.run()["step"] == 4 and (run_dir / "export" / "config.json").is_file()


def test_under_slurm_a_preempted_run_requeues_its_job(pretrain_data, tmp_path, monkeypatch):  # noqa: F811
    # SLURM's --requeue does not requeue a job that ends in TIMEOUT or COMPLETED: rank 0 asks for it.
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with monkeypatch.context() as patch:
        signal_after_step(patch, 1, signal.SIGTERM)
        out = train(pretrain_data, tmp_path / "run", "trainer.max_steps=3", "trainer.export=false")
    assert out["status"] == "preempted" and calls.read_text() == "requeue 4242\n"
    assert "requeued SLURM job 4242" in (tmp_path / "run" / "logs" / "rank0.log").read_text()


def test_srun_without_torchrun_is_refused_in_one_line(pretrain_data, tmp_path):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    out = subprocess.run([sys.executable, str(ROOT / "launch" / "pretrain.py"),
                          *tiny_overrides(pretrain_data, tmp_path / "run")],
                         capture_output=True, text=True, env={**env, "SLURM_NTASKS": "2", "DS_ACCELERATOR": "cpu"},
                         timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: started by srun as one of 2 tasks without torchrun")


def test_only_the_newest_checkpoints_are_kept(pretrain_data, tmp_path):  # noqa: F811
    train(pretrain_data, tmp_path / "run", "trainer.max_steps=6", "trainer.checkpoint_every=2",
          "trainer.keep_checkpoints=2", "trainer.export=false")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")] == ["step_00000004", "step_00000006"]


def test_truncated_checkpoint_is_skipped_with_a_warning(pretrain_data, tmp_path):  # noqa: F811
    args = ("trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=3", "trainer.export=false")
    run_dir = tmp_path / "run"
    train(pretrain_data, run_dir, *args)
    first = read_metrics(run_dir)
    victim = run_dir / "checkpoints" / "step_00000004" / "ds" / "mp_rank_00_model_states.pt"
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    (run_dir / "checkpoints" / ".tmp-step_00000006").mkdir()  # a save killed half way
    warnings = []
    assert checkpoint.latest_complete_checkpoint(run_dir, warn=warnings.append).name == "step_00000002"
    assert len(warnings) == 1 and "step_00000004: truncated file ds/mp_rank_00_model_states.pt" in warnings[0]

    out = train(pretrain_data, run_dir, *args)  # resume=auto is the default
    assert out["step"] == 4
    log = (run_dir / "logs" / "rank0.log").read_text()
    assert "skipping checkpoint" in log and "truncated file" in log and "resumed from" in log
    assert "removing incomplete checkpoint" in log and not (run_dir / "checkpoints" / ".tmp-step_00000006").exists()
    again = read_metrics(run_dir)
    assert [again[s]["train/loss"] for s in (3, 4)] == [first[s]["train/loss"] for s in (3, 4)]
    assert checkpoint.checkpoint_problem(run_dir / "checkpoints" / "step_00000004") is None  # rewritten whole


def test_non_finite_gradients_skip_the_update_then_stop(pretrain_data, tmp_path, monkeypatch):  # noqa: F811
    from pretrain.model import MLukeForPretraining

    forward = MLukeForPretraining.forward
    calls = {"n": 0, "bad": {3}}

    def poisoned(self, batch):
        out = forward(self, batch)
        calls["n"] += 1
        if calls["bad"] == "all" or calls["n"] in calls["bad"]:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MLukeForPretraining, "forward", poisoned)
    out = train(pretrain_data, tmp_path / "a", "trainer.max_steps=3", "trainer.export=false")
    # Micro-batch 3 (step 2 of 2 micro-batches a step) poisons its step's gradients: DeepSpeed skips that
    # update; the schedule still advances with the step.
    assert out["status"] == "finished" and out["step"] == 3 and calls["n"] == 6
    state = (checkpoint.latest_complete_checkpoint(tmp_path / "a") / "trainer_state.json").read_text()
    assert '"skipped_steps": 1' in state
    records = read_metrics(tmp_path / "a")
    assert all(r["train/loss"] == r["train/loss"] for r in records.values())  # no NaN in the logs
    assert [r["train/skipped_steps"] for _, r in sorted(records.items())] == [0, 1, 1]
    clean = train(pretrain_data, tmp_path / "clean", "trainer.max_steps=3", "trainer.export=false")
    assert clean["last"]["train/lr"] == out["last"]["train/lr"]

    calls.update(n=0, bad="all")
    with pytest.raises(TrainingError, match="3 steps in a row with non-finite gradients at step 3"):
        train(pretrain_data, tmp_path / "b", "trainer.max_steps=5", "trainer.max_bad_steps=3")


def test_a_training_step_never_waits_for_the_device(pretrain_data, tmp_path, monkeypatch):  # noqa: F811
    # On a GPU every read of a device value (.item(), .tolist(), float(), bool()...) waits for the queued
    # kernels, and when it feeds a collective, for the slowest rank. Inside a step nothing of ours may read one:
    # host figures are counted in the loader's thread, metrics stay on the device until a log step.
    import threading

    import pretrain

    ours = Path(pretrain.trainer.__file__).parent
    reads, inside = [], []
    original_step = Trainer.train_step

    def step(self):
        inside.append(True)
        try:
            original_step(self)
        finally:
            inside.pop()
    monkeypatch.setattr(Trainer, "train_step", step)
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, _original=original, _name=name, **k):
            frame = sys._getframe(1)
            if inside and threading.current_thread() is threading.main_thread() and \
                    Path(frame.f_code.co_filename).parent == ours:
                reads.append((_name, frame.f_code.co_filename, frame.f_lineno))
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, wrapped)
    train(pretrain_data, tmp_path / "run", "trainer.max_steps=4", "trainer.log_every=4", "trainer.export=false")
    assert reads == [], sorted(set(reads))


def test_flops_accounting_counts_the_heads_at_masked_positions():
    from transformers import LukeConfig

    from pretrain.metrics import flops_per_token, head_flops

    base = LukeConfig(vocab_size=250_002, entity_vocab_size=1_200_000, entity_emb_size=256, hidden_size=768,
                      num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      use_entity_aware_attention=False)
    encoder = flops_per_token(base, 512 + 128)
    assert 6 * 84e6 < encoder < 6 * 100e6  # XLM-R base: 85M non-embedding parameters, plus attention
    assert head_flops(base, 1, 0) == 6 * (768 * 768 + 768 * 250_002)
    assert head_flops(base, 0, 1) > 3 * encoder  # a masked entity's 1.2M-way softmax outweighs a token


def test_log_records_are_ratios_of_the_summed_figures():
    from pretrain.metrics import eval_record, train_record

    s = {"loss": 6.0, "micro_batches": 3, "mlm_loss": 8.0, "mlm_correct": 1.0, "mlm_count": 4,
         "mep_loss": 3.0, "mep_correct": 2.0, "mep_count": 2, "en/mlm_loss": 8.0, "en/mlm_correct": 1.0,
         "en/mlm_count": 4, "en/mep_loss": 0.0, "en/mep_correct": 0.0, "en/mep_count": 0, "ja/mlm_loss": 0.0,
         "ja/mlm_correct": 0.0, "ja/mlm_count": 0, "ja/mep_loss": 3.0, "ja/mep_correct": 2.0, "ja/mep_count": 2,
         "words": 300, "entities": 100, "padded": 600, "flops": 8e12, "data_seconds": 1.0, "seconds": 8.0}
    rec = train_record(s, 7, ["en", "ja"], world_size=2, peak=1e12)
    assert rec == {"step": 7, "train/loss": 2.0, "train/loss_mlm": 2.0, "train/loss_mep": 1.5, "train/acc_mlm": 0.25,
                   "train/acc_mep": 1.0, "train/en/loss_mlm": 2.0, "train/ja/loss_mep": 1.5,
                   "throughput/tokens_per_s": 100.0, "throughput/word_tokens_per_s": 75.0,
                   "throughput/data_wait_pct": 12.5, "throughput/padded_per_real_token": 1.5,
                   "throughput/mfu": 1.0}  # 8e12 FLOPs in 4 s on 2 x 1e12 FLOP/s
    assert "throughput/mfu" not in train_record(s, 7, ["en", "ja"], world_size=2, peak=None)  # CPUs: no peak
    assert eval_record(s, 7, ["en", "ja"]) == {
        "step": 7, "eval/en/loss_mlm": 2.0, "eval/en/acc_mlm": 0.25, "eval/ja/loss_mep": 1.5, "eval/ja/acc_mep": 1.0,
        "eval/acc_mlm": 0.25, "eval/acc_mep": 1.0}


@pytest.mark.parametrize("entity_aware", [False, True])
def test_flops_accounting_equals_torch_flop_counter(entity_aware):
    """batch_flops against what torch counts in a real forward + backward (no padding, so that both count
    the same positions)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LukeConfig

    from pretrain.masking import MaskingCollator
    from pretrain.metrics import batch_flops
    from pretrain.model import MLukeForPretraining

    config = LukeConfig(vocab_size=1000, entity_vocab_size=500, hidden_size=64, entity_emb_size=32,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, max_position_embeddings=80,
                        type_vocab_size=1, use_entity_aware_attention=entity_aware)
    g = torch.Generator().manual_seed(0)
    rows = [{"word_ids": [0, *torch.randint(4, 998, (62,), generator=g).tolist(), 2],
             "entity_ids": torch.randint(3, 500, (8,), generator=g).tolist(),
             "entity_spans": [[1 + 7 * i, 3 + 7 * i] for i in range(8)]} for _ in range(4)]
    batch = MaskingCollator(1000, 999, [0, 1, 2, 3])(rows, generator=0)
    assert batch["attention_mask"].all() and batch["entity_attention_mask"].all()
    with FlopCounterMode(display=False) as counter:
        MLukeForPretraining(config)(batch).loss.backward()
    assert counter.get_total_flops() == batch_flops(config, batch)


def test_wandb_offline_run_can_be_synced(pretrain_data, tmp_path):  # noqa: F811
    train(pretrain_data, tmp_path / "run", "trainer.max_steps=2", "wandb.mode=offline", "trainer.export=false")
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    # W&B's service process may still be flushing the run file when finish() returns.
    deadline = time.monotonic() + 30
    while b"train/loss" not in files[0].read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert b"train/loss" in files[0].read_bytes()
    wandb = ROOT / ".venv" / "bin" / "wandb" if (ROOT / ".venv" / "bin" / "wandb").exists() else "wandb"
    out = subprocess.run([str(wandb), "sync", "--dry-run"], cwd=tmp_path / "run", capture_output=True, text=True,
                         timeout=120)
    assert "Would sync 1 run" in out.stdout + out.stderr, out


def test_derived_values_and_config_errors(pretrain_data, tmp_path):  # noqa: F811
    cfg = compose(["data.dir=x", "model.init_from=y", "run_dir=z", "experiment=mluke_base", "stage=entity"])
    d = derive(cfg, world_size=16, device_type="cuda")
    assert (d.grad_accum, d.precision, d.lr, d.warmup_steps) == (4, "bf16", 5e-4, 2500)
    assert d.deepspeed["train_micro_batch_size_per_gpu"] == 32 and d.deepspeed["zero_optimization"]["stage"] == 1
    assert compose(["experiment=mluke_large", "stage=full", "data.dir=x", "model.init_from=y", "run_dir=z"]
                   ).optim.lr.full == 5e-5
    with pytest.raises(ConfigError, match="not a multiple of trainer.micro_batch_size=32 × world size 3"):
        derive(cfg, world_size=3, device_type="cuda")
    with pytest.raises(ConfigError, match="no bf16 support; use trainer.precision=fp16"):
        derive(cfg, world_size=16, device_type="cuda", bf16_supported=False)
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        derive(compose(["data.dir=x", "model.init_from=y", "run_dir=z", "trainer.precision=fp16"]), 1, "cpu")
    z3 = derive(compose(["data.dir=x", "model.init_from=y", "run_dir=z", "deepspeed=zero3_offload"]), 1, "cpu")
    assert z3.deepspeed["zero_optimization"]["offload_param"]["device"] == "cpu"
    train(pretrain_data, tmp_path / "run", "trainer.max_steps=1", "trainer.export=false")
    with pytest.raises(ConfigError, match="already has checkpoints; use resume=auto"):
        train(pretrain_data, tmp_path / "run", "trainer.max_steps=1", "resume=none")
    with pytest.raises(ConfigError, match="is a stage=full run; stage=entity needs its own run_dir"):
        train(pretrain_data, tmp_path / "run", "trainer.max_steps=1", "stage=entity")


def test_command_line_rejects_bad_overrides_before_any_work():
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    for args, message in (
        (["trainer.max_stepz=3"], "Key 'max_stepz' not in 'TrainerConfig'"),
        (["trainer.max_steps=many"], "Value 'many' of type 'str' could not be converted to Integer"),
        (["stage=second"], "Could not find 'stage/second'"),
        (["data.dir=x"], "missing required setting(s): model.init_from, run_dir"),
    ):
        out = subprocess.run([sys.executable, str(ROOT / "launch" / "pretrain.py"), *args], capture_output=True,
                             text=True, env=env, timeout=120)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    # (tests/test_layout.py checks that the doors reject bad arguments before torch is imported)


def test_local_rank_argument_moves_to_the_environment(monkeypatch):
    from pretrain.config import take_local_rank

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert take_local_rank(["p.py", "a=1", "--local_rank=3", "b=2"]) == ["p.py", "a=1", "b=2"]
    assert os.environ["LOCAL_RANK"] == "3"
    monkeypatch.delenv("LOCAL_RANK")
    assert take_local_rank(["p.py", "--local_rank", "1"]) == ["p.py"] and os.environ["LOCAL_RANK"] == "1"


def test_both_stages_on_a_real_preprocessing_output(preprocessed, tiny_xlmr, tmp_path):
    """The contract with preprocessing: the quickstart recipe on the pipeline's own output."""
    common = [f"data.dir={preprocessed}", "experiment=quickstart", "wandb.mode=disabled", "trainer.progress=false",
              "trainer.max_steps=3", "trainer.eval_every=3"]
    out1 = run(compose([*common, f"model.init_from={tiny_xlmr}", f"run_dir={tmp_path / 's1'}", "stage=entity"]))
    out2 = run(compose([*common, f"model.init_from={tmp_path / 's1'}", f"run_dir={tmp_path / 's2'}", "stage=full"]))
    assert out1["status"] == out2["status"] == "finished"
    evals = [line for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines() if "eval/" in line]
    assert len(evals) == 1 and all(f'"eval/{lang}/acc_mlm"' in evals[0] for lang in ("de", "en", "ja"))
