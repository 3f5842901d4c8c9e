#!/usr/bin/env bash
# The CPU test suite on other PyTorch releases than the installed one: the oldest we support (2.7)
# and the GPU machine's (2.11, on its Python 3.12). CI runs the installed torch only.
# Each VERSION[@PYTHON] gets a virtual environment under $TORCH_VERSIONS_DIR, made once; PyPI's
# Linux wheels are CUDA builds (about 5 GB each with their libraries), which run on a CPU.
#   bash scripts/check_torch_versions.sh [VERSION[@PYTHON] ...] [-- PYTEST ARGS]
#   e.g. bash scripts/check_torch_versions.sh 2.11.0@3.12 -- tests/test_model_step.py
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${TORCH_VERSIONS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/layernorm/torch}
specs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do specs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#specs[@]} -gt 0 ] || specs=(2.7.1 2.11.0@3.12)
failed=0
for spec in "${specs[@]}"; do
  version=${spec%@*}
  python=python3
  if [ "$spec" != "$version" ]; then
    python=python${spec#*@}
    # a pyenv shim runs only the versions selected; take the newest installed of that minor instead
    if ! "$python" -c "" 2>/dev/null && command -v pyenv >/dev/null; then
      python="$(pyenv root)/versions/$(pyenv versions --bare | grep "^${spec#*@}\." | tail -1)/bin/$python"
    fi
  fi
  env="$dir/$spec"
  if [ ! -x "$env/bin/python" ]; then
    "$python" -m venv "$env" && "$env/bin/pip" install -q "torch==$version" || { failed=1; continue; }
    # Triton's interpreter before 3.7 turns 1-element arrays into ints, which NumPy 2.4 refuses
    if ! "$env/bin/python" -c "import sys, triton; sys.exit(tuple(map(int, triton.__version__.split('.')[:2])) < (3, 7))"; then
      "$env/bin/pip" install -q "numpy<2.4"
    fi
    "$env/bin/pip" install -q -e ".[test]" || { failed=1; continue; }
  fi
  echo "=== torch $("$env/bin/python" -c 'import sys, torch, triton; print(torch.__version__, "triton", triton.__version__, "python", sys.version.split()[0])')"
  # the console-script test runs `layernorm` from PATH, which is this environment's only when active
  PATH="$env/bin:$PATH" "$env/bin/python" -m pytest -q -p no:cacheprovider "$@" || failed=1
done
exit $failed
