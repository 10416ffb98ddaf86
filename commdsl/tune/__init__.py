"""Autotuning over the constants a kernel declares with `tune NAME in [...]`.

    result = commdsl.autotune("examples/act_quant.cdsl", (x,))            # from Python
    act_quant = commdsl.load("examples/act_quant.cdsl", autotune=True)    # per shape, lazily
    $ commdsl tune examples/act_quant.cdsl --shape M=4096,K=7168           # from the shell

space.py (what to try), parallel_compile.py (compiling it in worker processes), search.py
(exhaustive or successive halving), timer.py (how to time), tuner.py (prune, time, pick),
progress.py (the bars), records.py (the saved choices), autotuned.py (the self-tuning
kernel), command.py (`commdsl tune`).
"""
from .autotuned import AutotunedKernel
from .tuner import Trial, TuneResult, autotune

__all__ = ["AutotunedKernel", "Trial", "TuneResult", "autotune"]
