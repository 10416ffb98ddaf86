#!/usr/bin/env bash
# Issue 6 on a lent 2-GPU host (kind nvidia-h200-x2), in one command, under 5 minutes:
#   1. the MoE GPU tests: dispatch bit for bit and combine within 5e-3 against torch for
#      T = 1, 128, 4096 (bf16 and FP8), and a rank that skips a call ending in a CommError;
#   2. bench/moe_comm.py: tuning, the tuned-vs-sweep check, and dispatch/combine against
#      NCCL all_to_all_single and the copy engine (bench/results/moe_comm-<device>.json).
# NVLink multicast stays off. Run from the repository root with .whl carried:
#   bash bench/moe_check.sh
cd "$(dirname "$0")/.." || exit 1
source bench/device_setup.sh || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export COMMDSL_CACHE_DIR=${COMMDSL_CACHE_DIR:-/tmp/commdsl-cache}
nvidia-smi topo -m | head -4
status=0
timeout 150 python3 -m pytest -q -m gpu tests/test_moe_gpu.py -x -p no:cacheprovider || status=1
timeout 130 python3 bench/moe_comm.py || status=1
exit $status
