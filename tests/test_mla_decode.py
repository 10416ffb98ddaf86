"""examples/mla_decode.cdsl on the CPU: FlashMLA's paged decoding (576-wide q k^T, the latent
reused as V, a shuffled block table, lengths 1, 64 and not multiples of 64, one and two
query tokens, causal and not), on the interpreter before and after every pass against
float64: O within twice the error of torch's attention in bf16 on the gathered pages, LSE
within 1e-4. On a GPU: test_gpu_mla_decode.py."""
from __future__ import annotations

import os
import re

import pytest
import torch

from commdsl.compiler import compile_file
from commdsl.interpreter import run
from commdsl.runtime.ptxas import assemble
from lowering import kernel_ir
from mla_reference import mla_errors, mla_operands

MLA = os.path.join(os.path.dirname(__file__), "..", "examples", "mla_decode.cdsl")


@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
@pytest.mark.parametrize("heads,s_q,lens,causal,config", [
    (64, 1, [70, 1, 129], 1, {}),
    (128, 2, [200], 1, dict(HB=128, KB=32)),           # two consumer warpgroups
    (64, 2, [64, 100], 0, dict(KB=32, CB=128)),
    (128, 1, [33, 130], 1, dict(HB=128, KB=32, CB=128))])
def test_interpreter_matches_float64(heads, s_q, lens, causal, config, lowered):
    q, kv, table, lens_t = mla_operands(heads, s_q, lens, seed=sum(lens) + s_q)
    kir = kernel_ir(MLA, lowered, CAUSAL=causal, **config)
    batch = len(lens)
    o = torch.full((batch, s_q, heads, 512), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((batch, heads, s_q), float("nan"))
    run(kir, dict(q=q, kv=kv, block_table=table, cache_seqlens=lens_t, o=o, lse=lse),
        dict(B=batch, S=s_q, H=heads, NB=kv.shape[0], MAXB=table.shape[1]), sms=3)
    for o_err, sdpa_err, lse_err in mla_errors(q, kv, table, lens_t, o, lse, causal):
        assert o_err <= 2 * sdpa_err and lse_err <= 1e-4


def test_nine_rows_of_q_kt_from_shared_memory_and_no_spills():
    ptx = compile_file(MLA).ptx
    # q k^T: 36 k16 steps over the nine 64-wide slabs, q and k both from shared memory
    assert len(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n64k16\.f32\.bf16\.bf16 "
                          r"\{[^}]+\}, %rd\d+, %rd\d+", ptx)) == 36
    # p v: 4 k16 steps over 64 keys into 256 columns, p from registers, v MN-major
    assert len(re.findall(r"m64n256k16\.f32\.bf16\.bf16 \{[^}]+\}, \{%r\d+, %r\d+, %r\d+, "
                          r"%r\d+\}, %rd\d+, [01], 1, 1, 1;", ptx)) == 4
    # q and k, nine boxes each: v is read inside k's tile (passes/subtile.py), not copied
    assert len(re.findall(r"cp\.async\.bulk\.tensor\.4d", ptx)) == 18
    report = assemble(ptx).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


def test_stages_past_shared_memory_count_the_resident_q():
    from commdsl.diagnostics import CompileError
    with pytest.raises(CompileError) as e:
        compile_file(MLA, constants=dict(HB=128, KB=64, STAGES=2))
    text = str(e.value)
    assert re.search(r"mla_decode\.cdsl:\d+:\d+: error: 2 stages of 73728 bytes and 147456 "
                     r"kept across the loop need 294960 bytes of shared memory", text)
    assert "help: use fewer stages" in text


SPLIT = os.path.join(os.path.dirname(__file__), "..", "examples", "mla_decode_split.cdsl")


@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
@pytest.mark.parametrize("splits,s_q,lens,config", [(3, 1, [40, 300], {}), (1, 2, [70], {}),
                                                   (4, 2, [2, 129], {}),
                                                   (3, 1, [200, 5], dict(KB=32, CB=64))])
def test_split_keys_and_combine_match_float64(splits, s_q, lens, config, lowered):
    """Each sequence's keys over `splits` CTAs (some splits past a short sequence's end: they
    write 0 and -inf), then the combine; both kernels on the interpreter."""
    heads = 64
    q, kv, table, lens_t = mla_operands(heads, s_q, lens, seed=splits + sum(lens))
    batch = len(lens)
    sizes = dict(B=batch, S=s_q, H=heads, NB=kv.shape[0], MAXB=table.shape[1])
    o_part = torch.full((splits, batch, s_q, heads, 512), float("nan"))
    lse_part = torch.full((splits, batch, heads, s_q), float("nan"))
    run(kernel_ir(SPLIT, lowered, SPLITS=splits, kernel="mla_decode_split", **config),
        dict(q=q, kv=kv, block_table=table, cache_seqlens=lens_t, o_part=o_part,
             lse_part=lse_part), sizes, sms=3)
    o = torch.full((batch, s_q, heads, 512), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((batch, heads, s_q), float("nan"))
    run(kernel_ir(SPLIT, lowered, SPLITS=splits, kernel="mla_combine"),
        dict(o_part=o_part, lse_part=lse_part, o=o, lse=lse),
        dict(B=batch, S=s_q, H=heads), sms=3)
    for o_err, sdpa_err, lse_err in mla_errors(q, kv, table, lens_t, o, lse, causal=1):
        assert o_err <= 2 * sdpa_err and lse_err <= 1e-4


def test_a_sequence_with_no_visible_key_gives_nan_and_minus_inf_without_hanging():
    """cache_seqlens 0 (or, with CAUSAL, fewer tokens than S): the key loop runs no step, the
    softmax of nothing is NaN (as torch's attention over an all-masked row) and its
    log-sum-exp -inf; the other sequences are unaffected."""
    q, kv, table, lens_t = mla_operands(64, 1, [0, 70], seed=5)
    o = torch.full((2, 1, 64, 512), 7.0, dtype=torch.bfloat16)
    lse = torch.full((2, 64, 1), 7.0)
    run(kernel_ir(MLA, True), dict(q=q, kv=kv, block_table=table, cache_seqlens=lens_t, o=o,
                                   lse=lse),
        dict(B=2, S=1, H=64, NB=kv.shape[0], MAXB=table.shape[1]), sms=3)
    assert o[0].isnan().all() and (lse[0] == float("-inf")).all()
    (o_err, sdpa_err, lse_err), = mla_errors(q[1:], kv, table[1:], lens_t[1:], o[1:], lse[1:],
                                             causal=1)
    assert o_err <= 2 * sdpa_err and lse_err <= 1e-4
