"""Two ranks on CPU (gloo): through the real `deepspeed` launcher (training, exact resume), and started the
way SLURM + torchrun start them (preemption: every rank checkpoints and exits 0)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pretrain_fixture import ROOT, compose, pretrain_data, read_metrics, tiny_overrides  # noqa: F401

from pretrain import checkpoint
from pretrain.distributed import free_port
from pretrain.trainer import Trainer


def command(args: list[str]) -> list[str]:
    deepspeed = Path(sys.executable).parent / "deepspeed"
    return [str(deepspeed) if deepspeed.exists() else "deepspeed", "--num_gpus", "2", "--master_port",
            str(free_port()), str(ROOT / "launch" / "pretrain.py"), *args]


ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                         "MASTER_PORT")}
ENV.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")


def start_ranks(args: list[str], world: int = 2) -> list[subprocess.Popen]:
    """The ranks as processes of their own, with the variables a launcher sets (torchrun, srun)."""
    env = {**ENV, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    return [subprocess.Popen([sys.executable, str(ROOT / "launch" / "pretrain.py"), *args], cwd=ROOT,
                             env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for r in range(world)]


def launch(args: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run(command(args), capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_two_ranks_preempted_and_resumed_match_an_uninterrupted_run(pretrain_data, tmp_path):  # noqa: F811
    def args(run_dir):
        return tiny_overrides(pretrain_data, run_dir, "trainer.max_steps=12", "trainer.checkpoint_every=100",
                              "trainer.global_batch_size=16", "trainer.micro_batch_size=2", "deepspeed=zero2",
                              "trainer.eval_every=12", "optim.lr.full=3e-3")

    launch(args(tmp_path / "full"))
    expected = read_metrics(tmp_path / "full")
    assert sorted(expected) == list(range(1, 13))
    assert (tmp_path / "full" / "logs" / "rank1.log").is_file()
    assert (tmp_path / "full" / "export" / "config.json").is_file()

    # SIGTERM to every rank once a step is logged, as SLURM does at preemption (and twice: launchers
    # forward it again). The ranks agree at the next step boundary, checkpoint together and exit 0.
    run_dir = tmp_path / "cut"
    metrics = run_dir / "metrics.jsonl"
    ranks = start_ranks(args(run_dir))
    deadline = time.time() + 240
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert all(r.poll() is None for r in ranks) and time.time() < deadline, ranks[0].stdout.read()[-3000:]
        time.sleep(0.05)
    for sig in (signal.SIGTERM, signal.SIGTERM):
        for r in ranks:
            r.send_signal(sig)
    for r in ranks:
        output = r.communicate(timeout=120)[0]
        assert r.returncode == 0, output[-3000:]  # a clean stop after the checkpoint
    ckpt = checkpoint.latest_complete_checkpoint(run_dir)
    assert ckpt is not None and 1 <= int(ckpt.name.split("_")[1]) < 12, output[-3000:]
    assert "checkpointed at step" in (run_dir / "logs" / "rank0.log").read_text()
    assert (ckpt / "rng_rank1.pt").is_file() and sorted(p.name for p in (ckpt / "ds").glob("zero_pp_rank_*")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]

    shutil.copytree(run_dir, tmp_path / "one")  # for a resume on one rank below

    launch([*args(run_dir), "resume=auto"])
    got = read_metrics(run_dir)
    assert sorted(got) == list(range(1, 13))
    for step in got:
        for key in ("train/loss", "train/loss_mlm", "train/loss_mep"):
            assert abs(got[step][key] - expected[step][key]) <= 1e-6 * abs(expected[step][key]), (step, key)
    assert "resumed from" in (run_dir / "logs" / "rank0.log").read_text()
    # Each rank draws its own dropout: their generators differ.
    final = checkpoint.latest_complete_checkpoint(tmp_path / "full")
    states = [torch.load(final / f"rng_rank{r}.pt", weights_only=False)["torch"] for r in range(2)]
    assert not torch.equal(*states)

    # The same checkpoint on one rank (another cluster size): through DeepSpeed's universal checkpoint, with
    # the schedule, the Adam moments and the data position of the 2-rank run.
    one = Trainer(compose(args(tmp_path / "one")))
    ckpt = tmp_path / "one" / "checkpoints" / ckpt.name
    saved = checkpoint.read_trainer_state(ckpt)
    assert (one.world, one.step, one.loader.state_dict()["position"]) == (1, saved["step"], saved["data"]["position"])
    assert one.scheduler.last_batch_iteration == saved["step"] - 1
    moments = sum(float((torch.load(f, weights_only=False)["param"] ** 2).sum())
                  for f in (ckpt / checkpoint.UNIVERSAL_TAG / "zero").glob("*/exp_avg.pt"))
    loaded = sum(float((state["exp_avg"] ** 2).sum()) for state in one.engine.optimizer.optimizer.state.values())
    assert moments > 0 and loaded == pytest.approx(moments, rel=1e-6)
    out = one.run()
    assert out["status"] == "finished" and out["step"] == 12
    resumed = read_metrics(tmp_path / "one")
    assert [resumed[s]["train/lr"] for s in range(saved["step"] + 1, 13)] == [
        expected[s]["train/lr"] for s in range(saved["step"] + 1, 13)]
    assert "universal" in (tmp_path / "one" / "logs" / "rank0.log").read_text()


def test_two_ranks_zero3_bf16_entity_stage_keeps_the_word_side_and_exports(pretrain_data, tmp_path):  # noqa: F811
    # ZeRO-3 partitions the frozen word side too: the consolidated weights (export, stage-2 init) must still hold
    # every parameter, in fp32, the frozen ones exactly as initialized (bf16 is mixed precision: never rounded).
    import torch
    from transformers import LukeForMaskedLM

    from pretrain.optim import ENTITY_SIDE
    from pretrain.weights import consolidated_state_dict, init_from_xlmr

    launch(tiny_overrides(pretrain_data, tmp_path / "s1", "trainer.max_steps=3", "trainer.micro_batch_size=2",
                          "stage=entity", "deepspeed=zero3", "trainer.precision=bf16", "optim.lr.entity=1e-2"))
    ckpt = checkpoint.latest_complete_checkpoint(tmp_path / "s1")
    assert sorted(p.name for p in (ckpt / "ds").glob("*zero_pp_rank_*optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    start = init_from_xlmr(pretrain_data / "xlmr", entity_vocab_size=18, entity_emb_size=32, seed=42).state_dict()
    state = consolidated_state_dict(ckpt)
    assert set(state) == set(start)
    word_side = [k for k in state if not k.startswith(ENTITY_SIDE)]
    for k in word_side:  # frozen: XLM-R's fp32 weights, bit for bit
        assert torch.equal(state[k], start[k]), k
    entities = state["luke.entity_embeddings.entity_embeddings.weight"]
    assert not torch.equal(entities, start["luke.entity_embeddings.entity_embeddings.weight"])  # trained
    assert not torch.equal(entities, entities.bfloat16().float())  # in fp32, not bf16
    hf = LukeForMaskedLM.from_pretrained(str(tmp_path / "s1" / "export"))
    assert torch.equal(hf.luke.encoder.layer[0].attention.self.query.weight,
                       start["luke.encoder.layer.0.attention.self.query.weight"])
