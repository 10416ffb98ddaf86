#!/usr/bin/env bash
# A/B on a lent GPU: this checkout against an older commdsl tree, benches interleaved in one run
# on the same card, so a compiler change can be shown to cost nothing.
#   usage (with `.whl` and OLD carried):  [ROUNDS=2] bash bench/ab_old.sh OLD [BENCH ...]
#   OLD: `git archive REV | tar -x -C OLD` of the older commit; BENCH: act_quant quant fp8_gemm
# Each bench's JSON lands in $OUT (or /tmp/ab) as BENCH-new-rN.json and BENCH-old-rN.json.
set -uo pipefail
old=$1; shift
benches=${*:-act_quant quant fp8_gemm}
out=${OUT:-/tmp/ab}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# Each tree as an importable package on PYTHONPATH (no install, so neither shadows the other),
# laid out as pyproject's package-dir mapping does: passes/, backends/, grammar/ inside commdsl/.
site_of() {
  local site=/tmp/site-$1; rm -rf $site; mkdir -p $site
  cp -r "$2/commdsl" $site/commdsl
  for d in passes backends grammar; do ln -s "$(realpath "$2/$d")" $site/commdsl/$d; done
  echo $site
}
declare -A dir=([new]=. [old]=$old) path=([new]=$(site_of new .):/tmp/site [old]=$(site_of old "$old"):/tmp/site)
declare -A args=([act_quant]="" [quant]="" [fp8_gemm]="--shapes 4096,7168,16384 128,2112,7168")
for side in new old; do
  (cd /tmp && PYTHONPATH=${path[$side]} python3 -c "import commdsl.passes.mma as m; print('$side:', m.__file__)")
done
for round in $(seq ${ROUNDS:-2}); do
  for b in $benches; do
    for side in new old; do
      echo "=== round $round: $b ($side)"
      (cd "${dir[$side]}" && PYTHONPATH=${path[$side]} python3 bench/$b.py ${args[$b]:-}) 2>&1 | tail -25
      cp "$(ls -t "${dir[$side]}"/bench/results/$b-*.json | head -1)" "$out/$b-$side-r$round.json"
    done
  done
done
