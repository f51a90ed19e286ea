"""Process-group setup, the few collectives the trainer uses and its preemption signals, under the deepspeed launcher,
torchrun or plain `python` (a world of one)."""

from __future__ import annotations

import logging
import os
import signal
import socket

import torch
import torch.distributed as dist

log = logging.getLogger("pretrain")


class DistributedError(Exception):
    """The processes were started in a way that cannot train; one line for the user."""


def free_port() -> int:
    """A TCP port nobody listens on now (for MASTER_PORT / `deepspeed --master_port`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, training device); NCCL on GPUs, gloo on CPUs."""
    import deepspeed

    if "RANK" not in os.environ:  # plain python: a world of one
        tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
        if tasks > 1:  # srun started copies of this program, not ranks of one job
            raise DistributedError(
                f"started by srun as one of {tasks} tasks without torchrun or deepspeed: each task would train "
                "alone in the same run_dir; run `srun torchrun ... launch/pretrain.py` (launch/slurm_pretrain.sh)")
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", auto_mpi_discovery=False)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), local_rank, device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


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


def requeue_slurm_job() -> str | None:
    """Under SLURM, put this job back in the queue (`scontrol requeue`): a job that stops after its preemption
    checkpoint would otherwise end COMPLETED (or TIMEOUT, which --requeue does not requeue) and never resume.
    Returns what was done, for the log; None outside SLURM."""
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"could not requeue SLURM job {job}: {e}"
    if done.returncode:
        return f"could not requeue SLURM job {job}: {(done.stderr or done.stdout).strip()}"
    return f"requeued SLURM job {job}: it resumes from this checkpoint"


class Preemption:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the next step boundary and exits 0.
    Repeated SIGTERMs are expected (SLURM signals every process and launchers forward it again);
    only a second Ctrl-C (SIGINT) stops at once."""

    def __init__(self):
        self.flag = False
        self.interrupts = 0
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

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
