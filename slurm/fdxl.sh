#!/bin/bash
# fdxl.sh: FDXL, SDXL 1.0 fine-tuned with DRTune on the HPS v2.1 reward (configs/fdxl.ini), as a multi-node Slurm
# job with one MPI rank per GPU, launched by srun. docs/FDXL.md is the walk-through (weights, settings, time and
# memory, checking the result). The documented call, from the repository root:
#   sbatch slurm/fdxl.sh                                      8 nodes x 8 GPUs, run folder runs/fdxl
#   DRTUNE_NODES=4 DRTUNE_MODEL=/data/sdxl-base slurm/fdxl.sh    submits itself with --nodes=4 and that model
#   sbatch --job-name=fdxl-full slurm/fdxl.sh --train.trainable=full --train.lr=1e-5 --output.export=merged
# The run folder is runs/JOB_NAME (or DRTUNE_RUN_DIR): a requeued or resubmitted job of the same name continues the
# same run (--resume auto), and --dependency=singleton keeps two of them from running at once. Slurm sends SIGUSR1
# ten minutes before the walltime; every rank checkpoints and the job requeues itself (slurm/job.sh has the rules
# and the other environment variables). train.batch must be divisible by the number of ranks.
#SBATCH --job-name=fdxl
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --dependency=singleton
#SBATCH --output=runs/slurm-%x-%j.out
[ -n "${SLURM_JOB_ID:-}" ] || exec sbatch ${DRTUNE_NODES:+--nodes="$DRTUNE_NODES"} "$0" "$@"
exec "${SLURM_SUBMIT_DIR:-.}/slurm/job.sh" configs/fdxl.ini "$@"
