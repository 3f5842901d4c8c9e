#!/usr/bin/env bash
# Install layernorm (editable) into the current Python; `install.sh test` adds the test tools.
# Where no torch is installed it takes PyTorch's CPU build first: a bare `torch`
# requirement can pull a CUDA build of several GB that a CPU machine cannot use.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c "import torch" 2>/dev/null; then
  "$python" -m pip install -q "torch==2.13.0" \
    || "$python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
# The package needs torch only; the tour and the experiments need the `experiments` extra.
extra="[experiments]"
if [ "${1:-}" = "test" ]; then extra="[test]"; fi
"$python" -m pip install -q -e ".${extra}"
