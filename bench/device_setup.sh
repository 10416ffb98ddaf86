#!/usr/bin/env bash
# Prepares a fresh lent GPU machine (no network) for commdsl's GPU tests and benchmarks:
# installs the carried lark wheel and commdsl itself in editable mode.
#   usage, at the start of a device command (with `.whl` carried):  source bench/device_setup.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null || return 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
