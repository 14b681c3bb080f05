#!/bin/bash
# sbt-batch Slurm job array: run 'golden demo', submission 1, array ids 0-2,5%50 (task index = array id + 1000).
# Every task runs `sbt-batch task run RUN_DIR INDEX`, which records tasks/<INDEX>/state.json.
# Edit a copy and pass it with --template; every {{ value }} is shell-quoted when rendered.
#SBATCH --job-name='golden demo'
#SBATCH --array=0-2,5%50
#SBATCH --chdir='/scratch/o'"'"'brien/sbt runs/golden demo-20250101T000000Z'
#SBATCH --output=/dev/null
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --partition=gpu
#SBATCH --account=atlas-trigger
#SBATCH --time=04:00:00
#SBATCH --mem=16384M
#SBATCH --gres=gpu:1
#SBATCH --dependency=afterok:4242_0:4242_1
#SBATCH --qos=normal
#SBATCH '--constraint=a100&ib'
#SBATCH '--comment=o'"'"'brien'"'"'s run'

# scheduler-side log (Slurm would expand '%' in a --output path that contains the run directory)
exec >>"logs/slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.out" 2>&1
export OMP_NUM_THREADS=4
export GREETING='it'"'"'s a $HOME "test"'
module load apptainer 2>/dev/null || true
exec apptainer exec --nv --bind /data:/data --bind /cvmfs:/cvmfs:ro --bind '/scratch/o'"'"'brien:/scratch/o'"'"'brien' '/cvmfs/images/sbt batch'"'"'s.sif' '/opt/sbt batch/bin/python' -m sbt_batch task run '/scratch/o'"'"'brien/sbt runs/golden demo-20250101T000000Z' "$((SLURM_ARRAY_TASK_ID + 1000))"
