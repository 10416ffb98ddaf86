"""Autotuning over the constants a kernel declares with `tune NAME in [...]`.

    result = commdsl.autotune("examples/act_quant.cdsl", (x,))            # from Python
    act_quant = commdsl.load("examples/act_quant.cdsl", autotune=True)    # per shape, lazily
    $ commdsl tune examples/act_quant.cdsl --shape M=4096,K=7168           # from the shell

model.py (a config's time estimated from the compiler's IR, without a GPU: profile.py reads
the work, machine.py has the rates, model_choice.py picks per shape, model_kernel.py is the
kernel whose `by model` defaults it picks), space.py (what to try), parallel_compile.py
(compiling it in worker processes), search.py (exhaustive or successive halving), timer.py
(how to time), tuner.py (prune by the model and the limits, time, pick), progress.py (the
bars), records.py (the saved choices), autotuned.py (the self-tuning kernel), command.py
(`commdsl tune`).
"""
from .autotuned import AutotunedKernel
from .tuner import Trial, TuneResult, autotune

__all__ = ["AutotunedKernel", "Trial", "TuneResult", "autotune"]
