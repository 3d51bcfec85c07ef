#!/usr/bin/env bash
# Runs main.py as one JAX job of N processes on this machine: the test of kd_jax's multi-host path on CPU.
#
#   bash scripts/multiprocess_local.sh N ARGS...
#   bash scripts/multiprocess_local.sh 2 --config=configs/default.py:smoke --workdir=runs/two_processes
#
# Process i gets JAX_PROCESS_ID=i, JAX_NUM_PROCESSES=N and a coordinator on a free local port
# (JAX_COORDINATOR_ADDRESS), so main.py joins the job with jax.distributed.initialize; the processes' CPU devices
# (one each, unless XLA_FLAGS forces more) form one mesh, and their collectives run over gloo. Waits for every
# process; when one fails, stops the others (after up to 60 s for a preempted job, exit 143, to stop together) and
# exits with its status. Environment: PYTHON (default python3),
# COORDINATOR_PORT (default: a free port), JAX_PLATFORMS (default cpu).
set -euo pipefail

if [ "$#" -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bash $0 NUM_PROCESSES [main.py ARGS...]" >&2
  exit 2
fi
num_processes=$1
shift
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
free_port='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
port=${COORDINATOR_PORT:-$("$python" -c "$free_port")}

pids=()
# SIGTERM to every process still running, SIGKILL after a grace period: a process blocked in a collective with a
# dead peer never gets to act on SIGTERM.
stop_all() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((waited = 0; waited < 10; waited++)); do
    if [ -z "$(jobs -rp)" ]; then
      return 0
    fi
    sleep 1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for ((process_id = 0; process_id < num_processes; process_id++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num_processes" JAX_PROCESS_ID="$process_id" \
    JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" "$python" "$repo_root/main.py" "$@" &
  pids+=("$!")
done

status=0
for ((remaining = num_processes; remaining > 0; remaining--)); do
  # wait -n returns the status of whichever process ends next.
  if wait -n; then
    continue
  else
    status=$?
  fi
  echo "multiprocess_local: a process failed (exit status $status); stopping the others." >&2
  if [ "$status" -eq 143 ]; then
    # Preempted (SIGTERM): the whole job stops at the same step and saves its checkpoint together; give the others
    # time to finish that on their own.
    for ((waited = 0; waited < 60; waited++)); do
      if [ -z "$(jobs -rp)" ]; then
        break
      fi
      sleep 1
    done
  fi
  stop_all
  wait || true
  break
done
exit "$status"
