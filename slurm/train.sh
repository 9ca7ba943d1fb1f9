#!/bin/bash
# train.sh: drtune training as a Slurm batch job, one MPI rank per GPU (or per node on CPU clusters).
# Submit with:   sbatch slurm/train.sh configs/default.ini [--section.key=value ...]
# Slurm sends SIGUSR1 two minutes before the walltime (--signal); drtune then writes a checkpoint and exits, and a
# resubmitted job continues from it (--resume auto), also on a different number of nodes.
#SBATCH --job-name=drtune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --output=runs/slurm-%j.out
set -euo pipefail
config=${1:?usage: sbatch slurm/train.sh CONFIG.ini [--section.key=value ...]}
shift
cd "${SLURM_SUBMIT_DIR:-.}"
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
srun --kill-on-bad-exit=1 build/drtune train --config "$config" --resume auto "$@"
