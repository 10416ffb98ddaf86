"""examples/peer_copy.cdsl, the bare NVLink copies bench/moe_comm.py measures its ceilings
with: each rank gets exactly the next rank's rows (pull) or gives them (push) on simulated
ranks, ragged edges included, and every config of the tune lists assembles without spills
with the MoE kernels' cache policy and bounded handshake."""
import itertools
import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.interpreter import run_ranks
from commdsl.runtime.ptxas import assemble

PEER_COPY = os.path.join(os.path.dirname(__file__), "..", "examples", "peer_copy.cdsl")


def _ir(kernel, **constants):
    return compile_source(open(PEER_COPY).read(), PEER_COPY, kernel=kernel,
                          constants=constants, emit="ir").ir[0]


def _rows(world, rows, hidden):
    g = torch.Generator().manual_seed(world * 100 + rows)
    return [(torch.randn(rows, hidden, generator=g) * 100).to(torch.bfloat16)
            for _ in range(world)]


@pytest.mark.parametrize("kernel", ["peer_pull", "peer_push"])
@pytest.mark.parametrize("world,rows,hidden,row_tile", [(2, 5, 256, 2), (3, 8, 1792, 4),
                                                        (2, 1, 2000, 2)])
def test_each_rank_moves_exactly_the_rows_to_or_from_the_next(kernel, world, rows, hidden,
                                                              row_tile):
    """peer_pull: rank r's dst is rank r + 1's src; peer_push: rank r + 1's dst is rank r's
    src (the ranks in a ring)."""
    src = _rows(world, rows, hidden)
    dst = [torch.full((rows, hidden), float("nan")).to(torch.bfloat16) for _ in range(world)]
    flags = [torch.zeros(world, dtype=torch.int32) for _ in range(world)]
    run_ranks(_ir(kernel, SMS=3, ROWS=row_tile, CHUNK=1792),
              [dict(src=src[r], dst=dst[r], flags=flags[r]) for r in range(world)],
              [dict(R=rows, H=hidden, W=world)] * world, epoch=1)
    for r in range(world):
        got, sent = ((dst[r], src[(r + 1) % world]) if kernel == "peer_pull" else
                     (dst[(r + 1) % world], src[r]))
        assert torch.equal(got.view(torch.int16), sent.view(torch.int16)), r


@pytest.mark.parametrize("kernel", ["peer_pull", "peer_push"])
def test_every_config_assembles_without_spills_with_the_moe_kernels_policies(kernel):
    for rows, chunk in itertools.product([2, 4, 8], [1792, 3584, 7168]):
        ptx = compile_file(PEER_COPY, kernel=kernel, constants={"ROWS": rows, "CHUNK": chunk}).ptx
        assert "st.release.sys.global.b32" in ptx and "%globaltimer" in ptx   # the handshake
        assert re.search(r"ld\.global\.nc\.L1::no_allocate\.L2::256B\.v4\.b32", ptx)
        report = assemble(ptx, arch="sm_90a", entry=kernel).report
        assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, (rows, chunk)
