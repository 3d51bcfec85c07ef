#!/usr/bin/env bash
# The accelerator section of scripts/benchmark.py on a GPU (or TPU) machine, in one command of about 8 minutes:
#
#     bash scripts/accelerator_check.sh [OUT_DIR]      # default: $OUT if set, else accelerator_out/
#
# Writes OUT_DIR/accel.json (every accel_ figure), OUT_DIR/accel.log (the run's output and table) and
# OUT_DIR/device.txt (nvidia-smi's name, driver and memory of the GPU, where there is one); exits with the
# benchmark's status (2: JAX found no GPU or TPU).
#
# The interpreter: $PYTHON if set; else python3 when it has JAX with a GPU or TPU backend and kd_jax's imports
# (an image with jax[cuda] and CUDA torch preinstalled); else the virtual environment .venv-accel, made on first use
# with pip (needs a registry): jax[cuda12] within requirements.txt's range, torch (PyPI's Linux wheels carry CUDA)
# and requirements.txt. On a machine that reaches no registry and lacks a pure-Python package (images with JAX,
# Flax and torch often lack ml-collections), put its wheel in .whl/ first (`pip download --no-deps -d .whl
# ml-collections==1.1.0` where pip reaches PyPI; its needs, absl-py and PyYAML, come with such images): the script
# installs .whl/*.whl into a temporary folder on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-accelerator_out}}
mkdir -p "$out"

ready() {  # $1 has JAX on a GPU or TPU and kd_jax's imports
  "$1" - <<'PYTHON' >/dev/null 2>&1
import absl, flax, jax, ml_collections, optax, orbax.checkpoint, transformers
assert jax.default_backend() != "cpu"
PYTHON
}

if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
python=${PYTHON:-python3}
if [[ -z "${PYTHON:-}" ]] && ! ready "$python"; then
  python=.venv-accel/bin/python
  if [[ ! -x $python ]] || ! ready "$python"; then
    echo "accelerator_check.sh: python3 lacks JAX on an accelerator or kd_jax's packages; installing .venv-accel" >&2
    python3 -m venv .venv-accel
    .venv-accel/bin/pip install -q --upgrade pip
    .venv-accel/bin/pip install -q "jax[cuda12]>=0.10.2,<0.11" torch -r requirements.txt
  fi
fi
if ! ready "$python"; then
  "$python" -c "import jax; print('JAX backend:', jax.default_backend(), jax.devices())" >&2 || true
  echo "accelerator_check.sh: $python has no JAX GPU/TPU backend or misses kd_jax's packages (see above)" >&2
  exit 2
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/device.txt" 2>&1 || true
"$python" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())" \
  >>"$out/device.txt" 2>&1
set +e
PYTHONUNBUFFERED=1 timeout 540 "$python" scripts/benchmark.py --accelerator --out "$out/accel.json" \
  --torch_python "$python" 2>&1 | tee "$out/accel.log"
status=${PIPESTATUS[0]}
set -e
echo "accelerator_check.sh: benchmark exit status $status; figures in $out/accel.json" >&2
exit "$status"
