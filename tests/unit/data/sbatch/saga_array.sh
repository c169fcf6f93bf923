#!/bin/bash

# Parameters
#SBATCH --account=nn1234k
#SBATCH --array=0-3%2
#SBATCH --cpus-per-task=2
#SBATCH --error=/cluster/home/me/.djhpc/runs/user_me_djhpc-run-12/%A_%a_0_log.err
#SBATCH --job-name=djhpc-12
#SBATCH --mem=4096M
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/cluster/home/me/.djhpc/runs/user_me_djhpc-run-12/%A_%a_0_log.out
#SBATCH --partition=normal
#SBATCH --signal=USR2@120
#SBATCH --time=120
#SBATCH --wckey=submitit

# setup
module load Python/3.11.3-GCCcore-12.3.0
source ~/venvs/lab/bin/activate

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /cluster/home/me/.djhpc/runs/user_me_djhpc-run-12/%A_%a_%t_log.out --error /cluster/home/me/.djhpc/runs/user_me_djhpc-run-12/%A_%a_%t_log.err /cluster/home/me/venvs/lab/bin/python -u -m submitit.core._submit /cluster/home/me/.djhpc/runs/user_me_djhpc-run-12
