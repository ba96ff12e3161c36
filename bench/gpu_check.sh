#!/usr/bin/env bash
# The GPU check: install the GPU extra from a wheel folder, then tests, GPU benchmarks and a mini-sweep
# (bench/gpu_check.py), in at most 8 minutes, printing one table and writing bench/results-gpu.json.
#
#   bench/gpu_check.sh WHEEL_DIR [--quick] [--out FILE] [--budget SECONDS]
#   bench/gpu_check.sh --skip-install [--quick] ...     (the GPU extra is already installed)
#
# WHEEL_DIR holds the wheels of the `gpu` extra (xformers built for this torch); nothing is fetched
# from a registry. PYTHON (default: .venv/bin/python if present, else python3) runs everything.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py=python3; fi
fi

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

wheels="" skip_install=0 rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --skip-install) skip_install=1 ;;
    --quick) rest+=("$1") ;;
    --out|--budget|--work)
      [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
      rest+=("$1" "$2"); shift ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [[ -z "$wheels" ]] || { echo "error: one wheel folder only (got $wheels and $1)" >&2; exit 2; }
      wheels="$1" ;;
  esac
  shift
done

if [[ $skip_install -eq 0 ]]; then
  [[ -n "$wheels" ]] || { echo "error: give the wheel folder of the GPU extra, or --skip-install (see --help)" >&2; exit 2; }
  [[ -d "$wheels" ]] || { echo "error: wheel folder $wheels does not exist" >&2; exit 2; }
  compgen -G "$wheels/*.whl" > /dev/null || { echo "error: no .whl files in $wheels" >&2; exit 2; }
  echo "installing the GPU extra from $wheels (no registry)"
  "$py" -m pip install -q --no-index --find-links "$wheels" xformers
fi

cd "$root"
exec timeout --kill-after=10 490 "$py" "$here/gpu_check.py" "${rest[@]}"
