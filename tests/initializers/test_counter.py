"""The counter-based generator and fills (initlab.initializers.counter, counter_fill, shard_index).

Oracles: Random123's published known answers for Philox4x32-10; a pure-Python Philox written here from
the paper's round function; the initializers' own fills for the deterministic laws; scipy's
distributions for the random ones. Shard reassembly across placements is in tests/distributed.

Statistical tolerances (same derivation as test_statistics.py): for n independent draws with mean μ,
variance σ² and kurtosis κ, |mean − μ| ≤ Z·σ/√n and |Σ(x − μ)²/n − σ²| ≤ Z·σ²·√((κ − 1)/n), with Z = 6
(a correct sampler fails with probability ≈ 2·10⁻⁹) and κ bounded per law (normal 3, its
truncations less, uniform 1.8, sparse 3/keep with keep = 0.7 → 4.3, a far one-sided tail up to 9, the
exponential limit; we use 9). The KS tests use a fixed
seed and reject at p < 10⁻³: deterministic, and a correct sampler would fail one with probability 10⁻³.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import initlab
from initlab.initializers import counter
from initlab.initializers.counter_fill import (
    ConstantLaw,
    NormalLaw,
    TruncNormalLaw,
    UniformLaw,
    fill_counter,
    fill_shard,
)
from initlab.initializers.shard_index import ShardIndex
from tests._sharding import CASES, KERAS_CASES, WHOLE, every_class_covered

SEED = counter.entry_seed(0, "layers.0.attention.wq.weight")
Z = 6.0


def _reference_words(i: int, seed: int, stream: int) -> tuple[int, int, int, int]:
    """Philox4x32-10 in plain Python ints (Salmon et al. 2011, Fig. 2), for index i."""
    c = [i & 0xFFFFFFFF, i >> 32, stream, 0]
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k1, p0 & 0xFFFFFFFF]
    return tuple(c)


def test_known_answers_on_both_implementations():
    assert counter.available(), "numba is a test dependency (pip install -e '.[dev]'); the kernels are off"
    assert counter.self_test() == {"torch": True, "numba": True}
    for ctr, key, want in counter.KAT:
        assert counter.philox4x32(*ctr, *key) == want  # the torch-ops code on Python ints


@pytest.mark.parametrize("stream", [counter.STREAM_VALUES, counter.STREAM_SPARSE])
def test_implementations_agree_with_a_plain_python_philox(stream):
    bases = torch.tensor([0, 7, 2**32 - 3, 2**40 + 5], dtype=torch.int64)  # runs cross the 2³² carry
    got = {}
    for name in ("numba", "torch"):
        if name == "torch":
            with counter.torch_ops():
                got[name] = [f(bases, 2, 9, SEED, stream) for f in (counter.u53, counter.u24, counter.y24)]
                got[name].append(counter.keys63(bases, 2, 9, SEED, stream))
        else:
            got[name] = [f(bases, 2, 9, SEED, stream) for f in (counter.u53, counter.u24, counter.y24)]
            got[name].append(counter.keys63(bases, 2, 9, SEED, stream))
    for a, b in zip(got["numba"], got["torch"], strict=True):
        assert torch.equal(a, b)
    u53, u24, y24, keys = got["numba"]
    u52 = counter.u53(bases, 2, 9, SEED, stream, open_interval=True)
    with counter.torch_ops():
        assert torch.equal(u52, counter.u53(bases, 2, 9, SEED, stream, open_interval=True))
    for r, b in enumerate(bases.tolist()):
        for j in range(7):
            w0, w1, _, _ = _reference_words(b + 2 + j, SEED, stream)
            assert u53[r, j].item() == (((w0 >> 5) << 26) | (w1 >> 6)) * 2.0**-53
            assert u52[r, j].item() == ((((w0 >> 6) << 26) | (w1 >> 6)) + 0.5) * 2.0**-52
            assert u24[r, j].item() == (w0 >> 8) * 2.0**-24
            assert y24[r, j].item() == (2 * (w0 >> 8) + 1 - 2**24) * 2.0**-24
            assert keys[r, j].item() == ((w0 >> 1) << 32) | w1


def test_open_interval_uniforms_never_hit_zero_or_one():
    u = counter.u53(torch.arange(0, 10**5, 1000), 0, 1000, SEED, open_interval=True)
    assert u.min().item() > 0 and u.max().item() < 1
    y = counter.y24(torch.zeros(1, dtype=torch.int64), 0, 10**5, SEED)
    assert y.abs().max().item() < 1 and (y != 0).all()


def test_values_depend_on_neither_chunking_nor_threads_nor_implementation():
    law = NormalLaw(0.0, 1.0)
    ref = fill_shard(torch.empty(300, 301), ShardIndex.full((300, 301)), law, SEED, workers=1)
    for chunk in (7, 300, 301, 1 << 16):
        assert torch.equal(ref, fill_shard(torch.empty(300, 301), ShardIndex.full((300, 301)), law, SEED, chunk=chunk))
    assert torch.equal(ref, fill_shard(torch.empty(300, 301), ShardIndex.full((300, 301)), law, SEED, workers=2,
                                       chunk=4096))
    with counter.torch_ops():
        assert torch.equal(ref, fill_shard(torch.empty(300, 301), ShardIndex.full((300, 301)), law, SEED))
    strided = torch.empty(301, 300).t()  # a non-contiguous target gets the same values
    assert torch.equal(ref, fill_shard(strided, ShardIndex.full((300, 301)), law, SEED))


@pytest.mark.parametrize("law,dist,kurtosis", [
    (UniformLaw(-1.0, 2.0), stats.uniform(-1.0, 3.0), 1.8),
    (NormalLaw(0.5, 2.0), stats.norm(0.5, 2.0), 3.0),
    (TruncNormalLaw(0.0, 1.0, -2.0, 2.0), stats.truncnorm(-2, 2), 3.0),       # float32 inverse CDF
    (TruncNormalLaw(0.0, 1.0, -1.0, 3.5), stats.truncnorm(-1, 3.5), 3.0),     # float64 path
    (TruncNormalLaw(1.0, 2.0, 6.0, 9.0), stats.truncnorm(2.5, 4.0, 1.0, 2.0), 9.0),  # right tail, mirrored
    (TruncNormalLaw(0.0, 0.02, -2.0, 2.0), stats.norm(0.0, 0.02), 3.0),      # cut beyond reach: the normal
], ids=["uniform", "normal", "trunc2sigma", "trunc_asym", "trunc_tail", "trunc_far"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_laws_follow_their_distributions(law, dist, kurtosis, dtype):
    n = 200_000
    x = fill_shard(torch.empty(n, dtype=dtype), ShardIndex.full((n,)), law, SEED).double()
    mu, var = dist.mean(), dist.var()
    assert abs(x.mean().item() - mu) <= Z * math.sqrt(var / n)
    assert abs(((x - mu) ** 2).mean().item() - var) <= Z * var * math.sqrt((kurtosis - 1) / n)
    lo, hi = law.bounds
    assert x.min().item() >= lo and x.max().item() <= hi
    assert stats.kstest(x[:50_000].numpy(), dist.cdf).pvalue > 1e-3


@pytest.mark.parametrize("name,init,shape,layout", [c for c in CASES if c[0] not in WHOLE],
                         ids=[c[0] for c in CASES if c[0] not in WHOLE])
def test_every_counter_law_is_the_law_describe_states(name, init, shape, layout):
    """Tiled up to a big sample (the law does not depend on the shape beyond describe's numbers)."""
    desc = init.describe(shape, layout)
    if desc.family in ("identity", "dirac", "constant"):
        got = fill_counter(init, torch.empty(shape), seed=SEED, layout=layout)
        assert torch.equal(got, init(torch.empty(shape), layout=layout))
        return
    n = 0
    xs = []
    for k in range(400):
        xs.append(fill_counter(init, torch.empty(shape, dtype=torch.float64), seed=SEED + k, layout=layout).reshape(-1))
        n += xs[-1].numel()
    x = torch.cat(xs)
    assert abs(x.mean().item() - desc.mean) <= Z * math.sqrt(desc.variance / n)
    assert abs(((x - desc.mean) ** 2).mean().item() - desc.variance) <= Z * desc.variance * math.sqrt(8 / n)
    assert x.min().item() >= desc.low and x.max().item() <= desc.high


@pytest.mark.parametrize("name,init,shape,layout", [c for c in CASES + KERAS_CASES if c[0] in
                                                    ("zeros", "ones", "constant", "identity", "dirac", "dirac_keras")],
                         ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_deterministic_laws_equal_the_initializers_own_fills(name, init, shape, layout, dtype):
    got = fill_counter(init, torch.empty(shape, dtype=dtype), seed=SEED, layout=layout)
    assert torch.equal(got, init(torch.empty(shape, dtype=dtype), layout=layout))


@pytest.mark.parametrize("layout,shape", [("torch", (30, 17)), ("keras", (17, 30))])
def test_sparse_has_its_zeros_per_column(layout, shape):
    init = initlab.Sparse(sparsity=0.3, std=0.1)
    w = fill_counter(init, torch.empty(shape), seed=SEED, layout=layout)
    per_column = (w == 0).sum(0 if layout == "torch" else 1)
    assert bool((per_column == math.ceil(0.3 * 30)).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_values_stay_within_the_bounds(dtype):
    for init in (initlab.RandomUniform(-0.1, 0.1), initlab.TruncatedNormal(0.0, 0.1), initlab.HeUniform()):
        d = init.describe((64, 64))
        w = fill_counter(init, torch.empty(64, 64, dtype=dtype), seed=SEED).float()
        assert w.min().item() >= d.low and w.max().item() <= d.high


def test_counter_law_only_where_the_class_vouches_for_it():
    class Halved(initlab.RandomNormal):  # a user variant: overrides the fill, inherits no counter law
        def _fill(self, work, desc, gen):
            super()._fill(work, desc, gen)
            work.mul_(0.5)

    assert Halved().counter_law((4, 4)) is None
    assert isinstance(initlab.RandomNormal().counter_law((4, 4)), NormalLaw)
    assert isinstance(initlab.GlorotUniform().counter_law((4, 4)), UniformLaw)  # inherits _fill and law together
    assert isinstance(initlab.Zeros().counter_law((4,)), ConstantLaw)
    assert initlab.Critical("tanh", orthogonal=True).counter_law((8, 8)) is None
    assert isinstance(initlab.Critical("tanh", orthogonal=True).counter_law((8,)), NormalLaw)  # its bias
    for name, init, shape, layout in CASES:
        assert (init.counter_law(shape, layout) is None) == (name in WHOLE), name


def test_the_cases_cover_the_whole_catalogue():
    assert not every_class_covered()


def test_fill_counter_refuses_bad_input():
    with pytest.raises(TypeError, match="init: Orthogonal has no counter-based law"):
        fill_counter(initlab.Orthogonal(), torch.empty(4, 4), seed=1)
    with pytest.raises(ValueError, match="meta device"):
        fill_counter(initlab.HeNormal(), torch.empty(4, 4, device="meta"), seed=1)
    with pytest.raises(ValueError, match=r"local: shape \(4, 4\), but the shard index holds \(2, 4\)"):
        fill_counter(initlab.HeNormal(), torch.empty(4, 4), seed=1, index=ShardIndex((8, 4), [range(2), range(4)]))
    with pytest.raises(ValueError, match=r"seed: .* \[0, 2\*\*64\)"):
        fill_counter(initlab.HeNormal(), torch.empty(4, 4), seed=-1)
    with pytest.raises(TypeError, match=r"tensor: expected a torch\.Tensor"):
        fill_counter(initlab.HeNormal(), [1.0], seed=1)


def test_entry_seed_is_the_plans_and_its_documented_hash():
    import hashlib

    from initlab.plan.apply import entry_seed

    assert entry_seed is counter.entry_seed
    digest = hashlib.sha256(b"3:fc.weight").digest()
    assert counter.entry_seed(3, "fc.weight") == int.from_bytes(digest[:8], "little") & (2**63 - 1)
