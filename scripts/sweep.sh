#!/usr/bin/env bash
# Runs every point of a sweep as its own process, PARALLEL at a time, then writes the sweep's report.
#
#   scripts/sweep.sh CONFIG WORKDIR [PARALLEL [--config.FIELD=VALUE ...]]
#   scripts/sweep.sh configs/sweep_temp.py runs/sweep_temp 2 --config.sweep.seeds=5
#
# Each point is `main.py --sweep_index=i` with its log in WORKDIR/logs/point_<i>.log, the same command a cluster
# array task runs. Points that share a teacher wait (file lock) for the one training it, then run side by side.
# Finished points are skipped, unfinished ones resume: rerun the same command after an interruption.
# Each process uses every CPU core for XLA; PARALLEL > 1 pays off when one point cannot keep the machine busy.
# PYTHON (default: python) is the interpreter. Exit status: 0 if every point finished, 1 otherwise, 2 bad input.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [PARALLEL [--config.FIELD=VALUE ...]]" >&2
  exit 2
fi
CONFIG=$1
WORKDIR=$2
PARALLEL=${3:-1}
shift $(($# < 3 ? $# : 3))
if ! [[ $PARALLEL =~ ^[1-9][0-9]*$ ]]; then
  echo "error: PARALLEL must be a positive integer, not '$PARALLEL'" >&2
  exit 2
fi
PYTHON=${PYTHON:-python}
REPO=$(cd "$(dirname "$0")/.." && pwd)

# Checks the whole sweep (a bad config: its one error line, exit 2) and counts its points; writes nothing.
list_log=$(mktemp)
trap 'rm -f "$list_log"' EXIT
points=$("$PYTHON" "$REPO/main.py" --config="$CONFIG" --workdir="$WORKDIR" --list_points "$@" 2>"$list_log") || {
  list_status=$?
  grep '^error:' "$list_log" >&2 || cat "$list_log" >&2
  exit $list_status
}
num_points=$(printf '%s\n' "$points" | grep -c .)
mkdir -p "$WORKDIR/logs"
echo "sweep: $num_points points of $CONFIG in $WORKDIR, $PARALLEL at a time (logs: $WORKDIR/logs/)"

run_point() {
  local index=$1
  shift
  local log="$WORKDIR/logs/point_$index.log"
  if "$PYTHON" "$REPO/main.py" --config="$CONFIG" --workdir="$WORKDIR" --sweep_index="$index" "$@" >"$log" 2>&1; then
    echo "point $index: done"
  else
    echo "point $index: FAILED (exit $?), see $log"
    return 1
  fi
}
export -f run_point
export PYTHON REPO CONFIG WORKDIR

status=0
seq 0 $((num_points - 1)) | xargs -P "$PARALLEL" -I{} bash -c 'run_point "$@"' _ {} "$@" || status=1
"$REPO/scripts/report.sh" "$WORKDIR" >/dev/null
echo "sweep: report in $WORKDIR/summary.md, $WORKDIR/results.csv, $WORKDIR/plots/"
exit $status
