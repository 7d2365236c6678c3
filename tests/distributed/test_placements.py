"""Placements as index sets, checked against torch's own placement code, and every catalogue law reassembled
from simulated shards: for each mesh coordinate, the local block a DTensor of these placements would
hold is filled by itself (no process group), and the blocks put back together must equal the
single-process fill bit for bit. tests/distributed/test_gloo.py does the same with real DTensors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.placement_types import _StridedShard, _StridedShardOffsetMode

import initlab
from initlab.distributed.placements import _strided_positions, placement_spec, shard_index_from, spec_index
from initlab.initializers.counter import entry_seed
from initlab.initializers.counter_fill import fill_counter
from initlab.initializers.shard_index import ShardIndex
from tests._sharding import CASES, KERAS_CASES, WHOLE

SEED = entry_seed(0, "w")

PLACEMENTS = [
    ((2,), [Shard(0)]),
    ((4,), [Shard(1)]),
    ((4,), [Shard(0)]),  # uneven: 10 rows as 3/3/3/1
    ((2, 2), [Shard(0), Shard(1)]),
    ((2, 2), [Replicate(), Shard(0)]),
    ((2, 2), [Shard(1), Shard(1)]),
    ((2, 2), [_StridedShard(0, split_factor=2), Shard(0)]),  # FSDP2 over a tensor-parallel Shard(0)
    ((2, 2), [_StridedShard(1, split_factor=2), Shard(1)]),
    ((3,), [Replicate()]),
]


@pytest.mark.parametrize("n,sf,k", [(n, sf, k) for n in (1, 5, 10, 13, 64, 66) for sf in (1, 2, 3, 4) for k in (1, 2, 4)])
def test_strided_positions_equal_torchs(n, sf, k):
    for r in range(k):
        size, offs = _StridedShard(0, split_factor=sf).local_shard_size_and_offset(n, k, r, _StridedShardOffsetMode.ALL)
        assert _strided_positions(n, sf, k, r).tolist() == (offs if size else [])


@pytest.mark.parametrize("mesh,placements", PLACEMENTS, ids=str)
def test_local_shapes_and_offsets_equal_torchs(mesh, placements):
    from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset

    for shape in ((10, 14), (5, 7), (66, 50)):
        for coord in itertools.product(*(range(m) for m in mesh)):
            idx = shard_index_from(shape, mesh, coord, placements)
            want_shape, want_offset = _compute_local_shape_and_global_offset(shape, mesh, list(coord), placements)
            assert idx.local_shape == tuple(want_shape)
            firsts = tuple(int(idx.dim_tensor(d)[0]) if len(idx.dims[d]) else None for d in range(len(shape)))
            assert all(f is None or f == o for f, o in zip(firsts, want_offset, strict=True)), (coord, firsts)


def test_partial_placements_are_refused():
    from torch.distributed.tensor import Partial

    with pytest.raises(ValueError, match="pending reduction"):
        shard_index_from((4, 4), (2,), (0,), [Partial()])


def _assemble(init, shape, layout, mesh, placements, dtype=torch.float32, chunk_check=False):
    out = torch.full(shape, float("nan"), dtype=torch.float64)
    for coord in itertools.product(*(range(m) for m in mesh)):
        idx = shard_index_from(shape, mesh, coord, placements)
        local = torch.empty(idx.local_shape, dtype=dtype)
        fill_counter(init, local, seed=SEED, layout=layout, index=idx)
        if idx.numel:
            flat = idx.flat_global()
            prev = out.view(-1)[flat]
            assert bool((torch.isnan(prev) | (prev == local.double().view(-1))).all()), f"replicas differ at {coord}"
            out.view(-1)[flat] = local.double().view(-1)
    assert not torch.isnan(out).any()
    return out.to(dtype)


@pytest.mark.parametrize("name,init,shape,layout", [c for c in CASES + KERAS_CASES if c[0] not in WHOLE],
                         ids=[c[0] for c in CASES + KERAS_CASES if c[0] not in WHOLE])
def test_every_counter_law_reassembles_bit_for_bit(name, init, shape, layout):
    full = fill_counter(init, torch.empty(shape), seed=SEED, layout=layout)
    for mesh, placements in PLACEMENTS:
        if any(getattr(p, "dim", 0) >= len(shape) for p in placements):
            continue
        got = _assemble(init, shape, layout, mesh, placements)
        assert torch.equal(got, full), (mesh, placements)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_reassembly_in_other_dtypes(dtype):
    for init in (initlab.HeNormal(), initlab.TruncatedNormal(0.0, 0.3), initlab.RandomUniform(-0.1, 0.1)):
        full = fill_counter(init, torch.empty(10, 14, dtype=dtype), seed=SEED)
        assert torch.equal(_assemble(init, (10, 14), "torch", (2, 2), [Shard(0), Shard(1)], dtype), full)


def test_a_slice_of_a_shard_is_the_slice_of_the_whole():
    """A plan entry of a packed parameter (the k block of in_proj_weight): its values are counted within
    the block, so any shard's part of the block equals the block filled alone."""
    import initlab

    init = initlab.GlorotUniform()
    block = (slice(12, 24),)
    whole_block = fill_counter(init, torch.empty(12, 8), seed=SEED)
    for coord in range(4):
        idx = shard_index_from((36, 8), (4,), (coord,), [Shard(0)])  # 9 rows each: the block spans ranks 1, 2
        pos, sub = idx.restrict(block)
        local = torch.zeros(idx.local_shape)
        view = local[tuple(slice(p.start, p.stop) for p in pos)]
        fill_counter(init, view, seed=SEED, index=sub)
        rows = idx.dim_tensor(0)
        inside = (rows >= 12) & (rows < 24)
        assert torch.equal(local[inside], whole_block[rows[inside] - 12])
        assert bool((local[~inside] == 0).all())


def test_spec_index_is_what_each_rank_computes_for_itself():
    assert placement_spec(torch.empty(3)) == ("plain",)
    spec = ("dtensor", (4, 5, 6, 7), (2, 2), (Shard(0), Shard(1)))
    for k, rank in enumerate((4, 5, 6, 7)):
        want = shard_index_from((10, 14), (2, 2), (k // 2, k % 2), [Shard(0), Shard(1)])
        assert spec_index(spec, (10, 14), rank) == want
    assert spec_index(spec, (10, 14), 0).numel == 0  # not in the mesh: holds nothing
    assert spec_index(("plain",), (10, 14), 3) == ShardIndex.full((10, 14))
