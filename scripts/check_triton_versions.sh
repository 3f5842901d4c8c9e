#!/usr/bin/env bash
# The direct launch path and the precompiled kernels checked against each Triton minor version
# from 3.2 up (tests/direct_launch_check.py, tests/precompile_check.py; CI runs them with the
# installed Triton only).
# Each version is installed once under $TRITON_VERSIONS_DIR (no GPU needed).
#   bash scripts/check_triton_versions.sh [VERSION ...]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
dir=${TRITON_VERSIONS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/layernorm/triton}
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  versions=(3.2.0 3.3.1 3.4.0 3.5.1 3.6.0 3.7.1 3.8.0)
  newest=$("$python" -m pip index versions triton 2>/dev/null | sed -n 's/^triton (\(.*\))$/\1/p')
  [ -n "$newest" ] && [[ ! " ${versions[*]} " =~ " $newest " ]] && versions+=("$newest")
fi
failed=0
for v in "${versions[@]}"; do
  if [ ! -d "$dir/$v/triton" ]; then
    "$python" -m pip install -q --no-deps --target "$dir/$v" "triton==$v"
  fi
  printf '%-8s ' "$v"
  for check in tests/direct_launch_check.py tests/precompile_check.py; do
    if ! env -u TRITON_INTERPRET -u TRITON_DEFAULT_FP_FUSION PYTHONPATH="$dir/$v" "$python" "$check"; then
      failed=1
    fi
  done
done
exit $failed
