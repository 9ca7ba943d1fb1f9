#!/bin/bash
# train.sh: any drtune configuration as a Slurm batch job, one MPI rank per GPU (or per node on CPU clusters), with
# the run folder, resume, checkpoint-on-signal and requeue handling of slurm/job.sh (docs/FDXL.md describes them).
# Submit with:   sbatch slurm/train.sh configs/default.ini [--section.key=value ...]
# The run folder is runs/JOB_NAME (sbatch --job-name=NAME, or DRTUNE_RUN_DIR); a resubmitted job of the same name
# continues it (--resume auto), also on a different number of nodes.
#SBATCH --job-name=drtune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --dependency=singleton
#SBATCH --output=runs/slurm-%x-%j.out
config=${1:?usage: sbatch slurm/train.sh CONFIG.ini [--section.key=value ...]}
shift
exec "${SLURM_SUBMIT_DIR:-.}/slurm/job.sh" "$config" "$@"
