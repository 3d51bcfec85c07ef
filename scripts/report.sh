#!/usr/bin/env bash
# (Re)writes a sweep's report from the files in its workdir: results.csv, summary.md and plots/ (PNG and PDF).
#
#   scripts/report.sh WORKDIR
#
# Reads WORKDIR/sweep.json and the results.json / history.jsonl of each finished point, so it works on any sweep
# workdir, also one whose points are still running or were run elsewhere (array jobs, other machines).
# PYTHON (default: python) is the interpreter.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 WORKDIR" >&2
  exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m kd_jax.reporting.report "$1"
