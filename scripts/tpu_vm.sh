#!/usr/bin/env bash
# Runs main.py on every worker of a Cloud TPU VM (a single host or a pod slice) as one JAX job: install, run, gather.
#
#   bash scripts/tpu_vm.sh --tpu=NAME --zone=ZONE --repo=GIT_URL [options] -- main.py ARGS...
#   bash scripts/tpu_vm.sh --tpu=kd-v4-32 --zone=us-central2-b --repo=https://github.com/ORG/kd_jax.git \
#     -- --config=configs/sweep_temp.py --workdir=/mnt/shared/runs/sweep_temp
#
# 1. install: on every worker, clone the repository (or update the clone) at --ref and pip-install
#    requirements.txt with jax[tpu] in the range requirements.txt gives jax; then --setup, if given.
# 2. run: on every worker at once, `python3 main.py --distributed=on ARGS`: each worker's process joins the job
#    (JAX detects the pod: coordinator, process count and id), the mesh spans the devices of all workers, and
#    process 0 (worker 0) writes the results.
# 3. gather: copy the workdir from worker 0 to --gather_to (default runs/<tpu>/).
#
# The workdir must be a file system that every worker sees (checkpoints, the teacher and its logit cache are
# shared by the processes): e.g. a Filestore (NFS) mount, or a bucket mounted with gcsfuse via --setup.
#
# Options:
#   --tpu=NAME --zone=ZONE [--project=PROJECT]   the TPU VM (gcloud compute tpus tpu-vm)
#   --repo=GIT_URL [--ref=REF]                    what to install (REF: branch, tag or commit; default main)
#   --dir=DIR                                     the clone on the workers (default kd_jax, in the home directory)
#   --setup=COMMAND                               run on every worker after the install (e.g. mount the workdir)
#   --skip_install                                reuse the workers' installation
#   --gather_to=DIR                               local destination of the workdir (default runs/<tpu>)
#   --dry_run                                     print the commands instead of running them
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

tpu="" zone="" project="" repo="" ref="main" dir="kd_jax" setup="" skip_install=0 gather_to="" DRY_RUN=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --tpu=*) tpu=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --repo=*) repo=${1#*=} ;;
    --ref=*) ref=${1#*=} ;;
    --dir=*) dir=${1#*=} ;;
    --setup=*) setup=${1#*=} ;;
    --skip_install) skip_install=1 ;;
    --gather_to=*) gather_to=${1#*=} ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (main.py's arguments go after --)" >&2; usage ;;
  esac
  shift
done
main_args=("$@")
if [ -z "$tpu" ] || [ -z "$zone" ] || { [ "$skip_install" -eq 0 ] && [ -z "$repo" ]; }; then
  echo "tpu_vm.sh: --tpu, --zone and --repo (unless --skip_install) are required" >&2
  usage
fi
workdir=""
for arg in "${main_args[@]}"; do
  case "$arg" in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
if [ -z "$workdir" ]; then
  echo "tpu_vm.sh: main.py needs --workdir=DIR (after --)" >&2
  exit 2
fi
case "$workdir" in /*) remote_workdir=$workdir ;; *) remote_workdir="$dir/$workdir" ;; esac
gather_to=${gather_to:-runs/$tpu}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$repo_root/scripts/command_lines.sh"
jax_requirement=$(grep -E '^jax[<>=]' "$repo_root/requirements.txt")
tpu_requirement="jax[tpu]${jax_requirement#jax}"

location=("--zone=$zone")
if [ -n "$project" ]; then
  location+=("--project=$project")
fi

on_all_workers() {
  run_or_print gcloud compute tpus tpu-vm ssh "$tpu" "${location[@]}" --worker=all --command="$1"
}

if [ "$skip_install" -eq 0 ]; then
  install="set -e; if [ ! -d $(quote "$dir") ]; then git clone -q $(quote "$repo") $(quote "$dir"); fi"
  install+="; cd $(quote "$dir") && git fetch -q origin $(quote "$ref") && git checkout -q --detach FETCH_HEAD"
  install+=" && python3 -m pip install -q -r requirements.txt $(quote "$tpu_requirement")"
  on_all_workers "$install"
fi
if [ -n "$setup" ]; then
  on_all_workers "$setup"
fi
on_all_workers "cd $(quote "$dir") && $(command_line python3 main.py --distributed=on "${main_args[@]}")"
run_or_print mkdir -p "$gather_to"
run_or_print gcloud compute tpus tpu-vm scp "$tpu:$remote_workdir" "$gather_to" "${location[@]}" --worker=0 --recurse
