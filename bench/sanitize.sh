#!/usr/bin/env bash
# compute-sanitizer over every single-GPU example (issue 17): memcheck, racecheck, synccheck
# and initcheck, each on a small aligned and a small ragged shape (bench/sanitize_driver.py
# launches one example's kernels once). Prints a table example/shape x tool -> errors, with
# the driver-API probes (e.g. cuGetProcAddress looking up a symbol the driver lacks, which
# the CUDA runtime and cuda-bindings do on purpose) counted apart and excluded; exits 1 on
# any other error. Under 5 minutes on an H100. On a lent GPU machine:
#   source bench/device_setup.sh && bash bench/sanitize.sh
#   SANITIZE_JOBS=8 (parallel processes), SANITIZE_LOGS=dir (keep every report there)
cd "$(dirname "$0")/.." || exit 1
SAN=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
[ -x "$SAN" ] || { echo "compute-sanitizer not found (set COMPUTE_SANITIZER)"; exit 2; }
export COMMDSL_CACHE_DIR=${COMMDSL_CACHE_DIR:-/tmp/commdsl-cache}
LOGS=${SANITIZE_LOGS:-$(mktemp -d /tmp/sanitize.XXXXXX)}
mkdir -p "$LOGS"
TOOLS="memcheck racecheck synccheck initcheck"   # as sanitize_driver.TOOLS
EXAMPLES=$(python3 bench/sanitize_driver.py --list) || exit 2
start=$SECONDS

run_one() {   # tool example shape; tool "plain" runs without compute-sanitizer
  local log="$LOGS/$1.$2.$3.log" pre=()
  [ "$1" = plain ] || pre=("$SAN" --tool "$1" --print-limit 100)
  timeout 240 "${pre[@]}" python3 bench/sanitize_driver.py "$2" "$3" >"$log" 2>&1
  echo $? >"$log.rc"
}
export -f run_one
export SAN LOGS
each() {      # every (tool, example, shape) of the tools given, JOBS at a time
  for ex in $EXAMPLES; do for shape in aligned ragged; do for tool in "$@"; do
    echo "$tool $ex $shape"
  done; done; done | xargs -P "${SANITIZE_JOBS:-8}" -L 1 bash -c 'run_one "$@"' _
}

# Compile every kernel (into the cache) and check that each launch runs at all, without
# the tools, so a failure here is not mistaken for a sanitizer's finding.
each plain
for rc in "$LOGS"/plain.*.rc; do
  [ "$(cat "$rc")" = 0 ] || { echo "plain run failed: ${rc%.rc}"; tail -5 "${rc%.rc}"; exit 1; }
done
echo "every example compiled and ran plainly in $((SECONDS - start)) s; logs in $LOGS"
each $TOOLS

python3 bench/sanitize_driver.py --summarize "$LOGS"
status=$?
echo "sanitize.sh: $((SECONDS - start)) s"
exit $status
