#!/bin/bash
# mLUKE pretraining on N nodes with SLURM: one task per node runs torchrun, which starts one process
# per GPU (rank/world size come from torchrun; no ssh, no hostfile).
#   sbatch --nodes=4 launch/slurm_pretrain.sh experiment=mluke_base stage=entity \
#       data.dir=/shared/OUT run_dir=/shared/runs/stage1
# Requeue-safe: SLURM sends SIGTERM before the time limit (--signal below); the trainer checkpoints at
# the next step boundary and exits 0, and the requeued job continues with resume=auto (the default).
#SBATCH --job-name=mluke
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR}"
source .venv/bin/activate

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=8 TOKENIZERS_PARALLELISM=false
# export NCCL_SOCKET_IFNAME=ib0   # set to your cluster's interconnect if NCCL picks the wrong one

# exec: srun forwards SLURM's SIGTERM to torchrun, which passes it to every rank.
exec srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID" \
    launch/pretrain.py "$@"
