#!/bin/bash
# mLUKE pretraining on N nodes with SLURM: one task per node runs torchrun, which starts one process
# per GPU (rank/world size come from torchrun; no ssh, no hostfile).
#   sbatch --nodes=4 launch/slurm_pretrain.sh experiment=mluke_base stage=entity \
#       data.dir=/shared/OUT run_dir=/shared/runs/stage1
# Preemption and time limits: SLURM sends SIGTERM 15 minutes before the limit (--signal below; also on
# preemption); torchrun passes it to every rank and waits up to 14 minutes (--shutdown-timeout) while the
# ranks finish their step and write a checkpoint; then rank 0 requeues the job (scontrol requeue: a job that
# ended in TIMEOUT or COMPLETED would not be requeued by --requeue alone) and the next run continues from
# the checkpoint (resume=auto, the default). Raise both times if checkpoints take longer on your storage.
#SBATCH --job-name=mluke
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@900
#SBATCH --requeue
#SBATCH --open-mode=append
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
    --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS_PER_NODE" --shutdown-timeout 840 \
    --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID" \
    launch/pretrain.py "$@"
