#!/bin/bash
# tiny.sh: the FDXL job's shape (slurm/fdxl.sh) on drtune's small model for CPU nodes: the default job
# (configs/default.ini) with the same run folder, resume, signal and requeue handling (slurm/job.sh). The cluster
# tests submit this script; it is also a quick check that a cluster runs drtune before a long GPU job.
#   sbatch slurm/tiny.sh [--section.key=value ...]           runs/tiny (the job name) is the run folder
#   sbatch --ntasks=2 slurm/tiny.sh                          two ranks (MPI through srun)
#   DRTUNE_NODES=2 slurm/tiny.sh                             submits itself with --nodes=2
#SBATCH --job-name=tiny
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --signal=USR1@60
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --dependency=singleton
#SBATCH --output=runs/slurm-%x-%j.out
[ -n "${SLURM_JOB_ID:-}" ] || exec sbatch ${DRTUNE_NODES:+--nodes="$DRTUNE_NODES"} "$0" "$@"
exec "${SLURM_SUBMIT_DIR:-.}/slurm/job.sh" configs/default.ini "$@"
