#!/usr/bin/env bash
# Submits main.py to SLURM: one JAX job over --nodes nodes (srun, one process per node or per GPU), or a sweep as
# an array job (one task per sweep point, `--sweep_index=$SLURM_ARRAY_TASK_ID`) followed by a job that writes
# the sweep's report once every point has finished.
#
#   bash scripts/slurm.sh [options] -- main.py ARGS...
#   bash scripts/slurm.sh --nodes=4 --gpus_per_node=8 --partition=gpu --setup='source ~/venv/bin/activate' \
#     -- --config=configs/default.py --workdir=/shared/runs/default
#
# Inside `srun` each task is one process of the JAX job: main.py sees a SLURM step of several tasks and calls
# jax.distributed.initialize, which reads the coordinator, process count and id from SLURM's variables. The mesh
# spans every GPU of every node; process 0 writes the results. The workdir and this checkout must be on a file
# system that every node sees.
#
# Options:
#   --nodes=N                   nodes per JAX job (default 1)
#   --gpus_per_node=G           GPUs to request per node (default 0: CPU nodes)
#   --processes=per_node|per_gpu  one process per node driving all its GPUs (default), or one per GPU
#   --partition=P --account=A --time=T --job_name=NAME   passed to sbatch (job name default kd_jax)
#   --setup=COMMAND             run on the nodes before main.py (e.g. activate the virtual environment)
#   --sweep                     an array job over the sweep's points, then the report job
#   --num_points=K              with --sweep: the number of points (default: counted with main.py --list_points)
#   --dry_run                   print the commands instead of submitting them
# Environment: PYTHON (default python3), the interpreter that counts the sweep's points here.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

nodes=1 gpus_per_node=0 processes=per_node partition="" account="" time_limit="" job_name=kd_jax setup=""
sweep=0 num_points="" DRY_RUN=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --nodes=*) nodes=${1#*=} ;;
    --gpus_per_node=*) gpus_per_node=${1#*=} ;;
    --processes=*) processes=${1#*=} ;;
    --partition=*) partition=${1#*=} ;;
    --account=*) account=${1#*=} ;;
    --time=*) time_limit=${1#*=} ;;
    --job_name=*) job_name=${1#*=} ;;
    --setup=*) setup=${1#*=} ;;
    --sweep) sweep=1 ;;
    --num_points=*) num_points=${1#*=} ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; break ;;
    *) echo "slurm.sh: unknown option $1 (main.py's arguments go after --)" >&2; usage ;;
  esac
  shift
done
main_args=("$@")
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ && "$gpus_per_node" =~ ^[0-9]+$ ]]; then
  echo "slurm.sh: --nodes must be a positive integer and --gpus_per_node a non-negative one" >&2
  exit 2
fi
case "$processes" in
  per_node) tasks_per_node=1 ;;
  per_gpu)
    if [ "$gpus_per_node" -eq 0 ]; then
      echo "slurm.sh: --processes=per_gpu needs --gpus_per_node > 0" >&2
      exit 2
    fi
    tasks_per_node=$gpus_per_node ;;
  *) echo "slurm.sh: --processes=$processes: allowed: per_node, per_gpu" >&2; exit 2 ;;
esac
if ! printf '%s\n' "${main_args[@]}" | grep -q '^--workdir='; then
  echo "slurm.sh: main.py needs --workdir=DIR (after --)" >&2
  exit 2
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$repo_root/scripts/command_lines.sh"

if [ "$sweep" -eq 1 ] && [ -z "$num_points" ]; then
  num_points=$(cd "$repo_root" && "${PYTHON:-python3}" main.py "${main_args[@]}" --list_points | grep -c .) || {
    echo "slurm.sh: could not list the sweep's points (main.py ${main_args[*]} --list_points)" >&2
    exit 2
  }
fi

scheduling=()
for option in "--partition=$partition" "--account=$account" "--time=$time_limit"; do
  if [ -n "${option#*=}" ]; then
    scheduling+=("$option")
  fi
done

# The batch script: every task of the srun step runs one process of the JAX job.
job_script="#!/bin/bash
#SBATCH --job-name=$job_name
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node"
if [ "$gpus_per_node" -gt 0 ]; then
  job_script+="
#SBATCH --gpus-per-node=$gpus_per_node"
fi
for option in "${scheduling[@]}"; do
  job_script+="
#SBATCH $option"
done
srun_line="srun $(command_line python3 main.py "${main_args[@]}")"
if [ "$sweep" -eq 1 ]; then
  job_script+="
#SBATCH --array=0-$((num_points - 1))
#SBATCH --output=$job_name-%A_%a.out"
  srun_line+=' --sweep_index="$SLURM_ARRAY_TASK_ID"'
else
  job_script+="
#SBATCH --output=$job_name-%j.out"
fi
job_script+="
set -eo pipefail
cd $(quote "$repo_root")"
if [ -n "$setup" ]; then
  job_script+="
$setup"
fi
if [ "$processes" = per_node ] && [ "$gpus_per_node" -gt 0 ]; then
  # JAX gives each SLURM task the GPU of its local task id; one process per node drives all of the node's GPUs.
  job_script+="
export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus_per_node - 1)))"
fi
job_script+="
$srun_line"

# The report job: main.py on the whole sweep skips the finished points and writes the report.
report_command="cd $(quote "$repo_root")${setup:+ && $setup} && $(command_line python3 main.py "${main_args[@]}")"
report_options=(--job-name="$job_name-report" --nodes=1 --ntasks=1 "${scheduling[@]}" --output="$job_name-report-%j.out"
                --wrap="$report_command")

if [ "$DRY_RUN" -eq 1 ]; then
  if [ "$sweep" -eq 1 ]; then
    printf '%s\n' 'job_id=$(sbatch --parsable <<'"'EOF'"
  else
    printf '%s\n' "sbatch <<'EOF'"
  fi
  printf '%s\nEOF\n' "$job_script"
  if [ "$sweep" -eq 1 ]; then
    printf ')\n%s\n' "sbatch --dependency=afterok:\$job_id $(command_line "${report_options[@]}")"
  fi
elif [ "$sweep" -eq 1 ]; then
  job_id=$(sbatch --parsable <<<"$job_script")
  echo "slurm.sh: submitted array job $job_id ($num_points points)"
  sbatch --dependency="afterok:$job_id" "${report_options[@]}"
else
  sbatch <<<"$job_script"
fi
