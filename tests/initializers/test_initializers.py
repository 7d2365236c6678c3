"""The catalogue: names, the public API, config round trips, seeds, dtypes, devices and structured inits."""

import math
import subprocess
import sys

import pytest
import torch

import initlab
from initlab import CATALOGUE, get

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

KERAS_NAMES = {
    "Zeros": ["zeros", "zero"],
    "Ones": ["ones", "one"],
    "Constant": ["constant"],
    "RandomNormal": ["random_normal", "normal"],
    "RandomUniform": ["random_uniform", "uniform"],
    "TruncatedNormal": ["truncated_normal"],
    "VarianceScaling": ["variance_scaling"],
    "GlorotNormal": ["glorot_normal"],
    "GlorotUniform": ["glorot_uniform"],
    "HeNormal": ["he_normal"],
    "HeUniform": ["he_uniform"],
    "LecunNormal": ["lecun_normal"],
    "LecunUniform": ["lecun_uniform"],
    "Orthogonal": ["orthogonal", "OrthogonalInitializer"],
    "Identity": ["identity", "IdentityInitializer"],
    "STFT": ["stft", "STFTInitializer"],
}
EXTRA_NAMES = {
    "XavierUniform": "xavier_uniform",
    "XavierNormal": "xavier_normal",
    "KaimingUniform": "kaiming_uniform",
    "KaimingNormal": "kaiming_normal",
    "TruncNormal": "trunc_normal",
    "TorchDefault": "torch_default",
    "Dirac": "dirac",
    "DeltaOrthogonal": "delta_orthogonal",
    "Sparse": "sparse",
}

#: A shape each initializer can fill in torch layout.
SHAPES = {"Identity": (6, 9), "Dirac": (8, 4, 3, 3), "DeltaOrthogonal": (8, 4, 3, 3), "STFT": (5, 2, 8)}
#: Non-default constructor arguments, for round trips that carry real values.
CONFIGS = {
    "Constant": {"value": 0.3},
    "RandomNormal": {"mean": 0.1, "stddev": 0.2, "seed": 3},
    "RandomUniform": {"minval": -0.3, "maxval": 0.7, "seed": 4},
    "TruncatedNormal": {"mean": 0.0, "stddev": 0.3, "seed": 5},
    "VarianceScaling": {"scale": 2.0, "mode": "fan_geo_avg", "distribution": "uniform", "seed": 6,
                        "input_axes": None, "output_axes": None},
    "Orthogonal": {"gain": 2.0, "seed": 7},
    "Identity": {"gain": 3.0},
    "STFT": {"side": "imag", "window": "hamming", "periodic": True, "scaling": "spectrum"},
    "XavierUniform": {"gain": 1.5, "seed": 8},
    "KaimingNormal": {"a": 0.2, "mode": "fan_out", "nonlinearity": "leaky_relu", "seed": 9},
    "TruncNormal": {"mean": 0.5, "std": 2.0, "a": 0.0, "b": 1.0, "seed": 10},
    "Dirac": {"groups": 2},
    "Sparse": {"sparsity": 0.3, "std": 0.1, "seed": 11},
}
#: The catalogue proper (other modules may register more with origin "user" or their own).
ALL_CLASSES = [c for c, (origin, _) in CATALOGUE.items() if origin in ("keras", "torch", "jax")]
RANDOM_CLASSES = [c for c in ALL_CLASSES if c.random]


def _shape(cls):
    return SHAPES.get(cls.__name__, (12, 10))


def test_catalogue_holds_every_keras_torch_and_jax_name():
    for cls_name, aliases in KERAS_NAMES.items():
        for name in [cls_name, *aliases]:
            assert type(get(name)).__name__ == cls_name, name
        assert CATALOGUE[type(get(cls_name))][0] == "keras"
    for cls_name, alias in EXTRA_NAMES.items():
        assert type(get(alias)).__name__ == cls_name
        assert type(get(cls_name)).__name__ == cls_name
    assert CATALOGUE[initlab.DeltaOrthogonal][0] == "jax"
    assert {r["name"] for r in initlab.catalogue()} >= set(KERAS_NAMES) | set(EXTRA_NAMES)
    assert {c.__name__ for c in ALL_CLASSES} == set(KERAS_NAMES) | set(EXTRA_NAMES)


def test_public_api_of_the_issue():
    init = get("glorot_uniform")
    w = torch.empty(16, 250)
    assert init(w, seed=0) is w
    k = init.sample((250, 16), layout="keras", seed=0)
    assert k.shape == (250, 16)
    # Same fans either way, so the same bound; torch layout (out, in) is the transpose of Keras's.
    limit = math.sqrt(6 / 266)
    assert w.abs().max() <= limit and k.abs().max() <= limit
    assert get("he_normal").get_config() == {"seed": None, "input_axes": None, "output_axes": None}
    assert get(init) is init and isinstance(get(initlab.HeUniform), initlab.HeUniform)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_config_round_trip(cls):
    cfg = CONFIGS.get(cls.__name__)
    init = cls(**cfg) if cfg else cls()
    assert type(init).from_config(init.get_config()) == init
    assert get({"class_name": cls.__name__, "config": init.get_config()}) == init
    assert get(initlab.serialize(init)) == init
    assert init.clone() == init
    if cfg:
        assert init.get_config() == {**init.get_config(), **cfg}
    a = init.sample(_shape(cls), seed=1)
    b = get(initlab.serialize(init)).sample(_shape(cls), seed=1)
    assert torch.equal(a, b)


def test_serialize_is_keras_shaped():
    assert initlab.serialize(initlab.HeNormal(seed=5)) == {
        "module": "keras.initializers",
        "class_name": "HeNormal",
        "config": {"seed": 5, "input_axes": None, "output_axes": None},
        "registered_name": None,
    }
    s = initlab.serialize(initlab.Dirac(groups=2))
    assert s["registered_name"] == "Dirac" and s["module"] == "initlab.initializers"


def test_keras_normal_distribution_means_truncated():
    vs = initlab.VarianceScaling(distribution="Normal")
    assert vs.distribution == "truncated_normal"
    assert vs.describe((50, 50)).family == "truncated_normal"


@pytest.mark.parametrize("cls", RANDOM_CLASSES, ids=lambda c: c.__name__)
def test_int_seed_repeats_none_draws_fresh_generator_advances(cls):
    init, shape = cls(), _shape(cls)
    assert torch.equal(init.sample(shape, seed=123), init.sample(shape, seed=123))
    assert not torch.equal(init.sample(shape), init.sample(shape))
    # The constructor seed is used when the call gives none.
    seeded = type(init).from_config({**init.get_config(), "seed": 42})
    assert torch.equal(seeded.sample(shape), seeded.sample(shape))
    assert torch.equal(seeded.sample(shape), init.sample(shape, seed=42))
    # A generator is used and advanced: two calls differ, a re-seeded generator repeats them.
    g = torch.Generator().manual_seed(7)
    first, second = init.sample(shape, seed=g), init.sample(shape, seed=g)
    assert not torch.equal(first, second)
    g.manual_seed(7)
    assert torch.equal(init.sample(shape, seed=g), first)
    # seed=None uses torch's global RNG, so torch.manual_seed makes a program reproducible.
    torch.manual_seed(0)
    x = init.sample(shape)
    torch.manual_seed(0)
    assert torch.equal(init.sample(shape), x)


def test_int_seed_gives_the_same_values_in_another_process():
    code = (
        "import initlab, torch; torch.set_printoptions(precision=10); "
        "print(initlab.get('he_normal').sample((3, 4), seed=2024).flatten().tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = initlab.get("he_normal").sample((3, 4), seed=2024).flatten().tolist()
    assert eval(out) == here


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_dtype_and_device_within_bounds(cls, dtype, device):
    init, shape = cls(), _shape(cls)
    t = torch.empty(shape, dtype=dtype, device=device)
    out = init(t, seed=0)
    assert out is t and t.dtype == dtype and t.device.type == device
    assert torch.isfinite(t).all()
    d = init.describe(shape)
    # A bound rounded to the tensor's dtype may sit one ulp outside the float64 bound; values can
    # reach the rounded bound and no further.
    lo = torch.tensor(d.low, dtype=torch.float64).to(dtype).item() if math.isfinite(d.low) else -math.inf
    hi = torch.tensor(d.high, dtype=torch.float64).to(dtype).item() if math.isfinite(d.high) else math.inf
    assert lo <= t.min().item() and t.max().item() <= hi
    # The low-precision fill is the float32 fill rounded (then kept inside the bounds).
    if dtype in (torch.float16, torch.bfloat16):
        ref = init(torch.empty(shape, device=device), seed=0).to(dtype)
        assert (t.double() - ref.double()).abs().max().item() <= 2 * torch.finfo(dtype).eps * max(abs(lo), abs(hi), 1)


def test_non_contiguous_and_parameter_targets_are_filled_in_place():
    lin = torch.nn.Linear(30, 20)
    out = initlab.GlorotUniform()(lin.weight, seed=3)
    assert out is lin.weight and lin.weight.requires_grad
    assert torch.equal(lin.weight.detach(), initlab.GlorotUniform().sample((20, 30), seed=3))
    base = torch.zeros(30, 20)
    view = base.t()  # (20, 30), not contiguous
    initlab.GlorotUniform()(view, seed=3)
    assert torch.equal(view, lin.weight.detach())


def test_truncated_normals_are_cut_at_two_sigma_with_the_variance_correction():
    d = initlab.describe("he_normal", (1000, 1000))
    x = initlab.HeNormal().sample((1000, 1000), seed=0)
    assert d.high == pytest.approx(2 * math.sqrt(2 / 1000) / 0.87962566103423978, rel=1e-12)
    assert x.abs().max().item() <= torch.tensor(d.high).float().item()
    # 10⁶ draws: the sample std has relative standard error √((κ−1)/(4n)) ≈ 0.0006 (κ ≈ 2.36);
    # 0.004 is > 6 of them.
    assert x.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.004)
    t = initlab.TruncatedNormal(mean=1.0, stddev=0.5).sample((1000, 1000), seed=1)
    assert t.min().item() >= 0.0 and t.max().item() <= 2.0
    assert t.std().item() == pytest.approx(0.5 * 0.87962566103423978, rel=0.004)


def test_fan_geo_avg_and_input_axes():
    d = initlab.VarianceScaling(1.0, "fan_geo_avg", "uniform").describe((16, 64))
    assert d.variance == pytest.approx(1 / 32)
    vs = initlab.VarianceScaling(1.0, "fan_in", "uniform", input_axes=[0], output_axes=[1, 2])
    assert vs.describe((8, 4, 16), layout="keras").fan_in == 8
    assert vs.describe((8, 4, 16), layout="keras").fan_out == 64


@pytest.mark.parametrize(("shape", "layout"), [((8, 2, 3, 3), "torch"), ((32, 2, 3, 3), "torch"), ((3, 3, 4, 8), "keras"),
                                               ((20, 50), "torch"), ((50, 20), "keras")])
def test_orthogonal_is_orthogonal_times_gain(shape, layout):
    w = initlab.Orthogonal(gain=2.0).sample(shape, layout=layout, seed=0).double()
    m = w.reshape(shape[0], -1) if layout == "torch" else w.reshape(-1, shape[-1])
    small = m @ m.t() if m.shape[0] <= m.shape[1] else m.t() @ m
    torch.testing.assert_close(small, 4 * torch.eye(small.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)


def test_identity_dirac_delta_orthogonal():
    assert torch.equal(initlab.Identity(2.0).sample((3, 5)), 2 * torch.eye(3, 5))
    w = initlab.Dirac(groups=2).sample((8, 2, 3, 3))
    assert w.sum() == 4 and w[:, :, 1, 1].nonzero().tolist() == [[0, 0], [1, 1], [4, 0], [5, 1]]
    x = torch.randn(1, 4, 7, 7)
    conv = torch.nn.functional.conv2d(x, initlab.Dirac().sample((4, 4, 3, 3)), padding=1)
    torch.testing.assert_close(conv, x)
    d = initlab.DeltaOrthogonal(gain=1.0).sample((8, 4, 4, 4), seed=0)  # centre (k−1)//2 = 1 (JAX)
    centre = d[:, :, 1, 1]  # (out, in)
    torch.testing.assert_close(centre.t() @ centre, torch.eye(4), atol=1e-5, rtol=0)
    assert d.abs().sum().item() == pytest.approx(centre.abs().sum().item())


def test_sparse_zeros_per_column_and_seeded_positions():
    w = initlab.Sparse(sparsity=0.25, std=0.01).sample((10, 6), seed=0)
    assert ((w == 0).sum(dim=0) == 3).all()  # ceil(0.25·10) = 3, as torch.nn.init.sparse_
    assert torch.equal(w, initlab.Sparse(sparsity=0.25, std=0.01).sample((10, 6), seed=0))


def test_sparse_zero_positions_are_uniform():
    # Floyd's algorithm gives each column a uniform 3-subset of 10 rows: every row is zero with
    # probability 0.3 in each of 20000 columns, so its count is Binomial(20000, 0.3): mean 6000,
    # sd √(20000·0.3·0.7) = 64.8; 6 sd = 389. Likewise for sparsity 0.8 (the complement branch).
    for sparsity, p in ((0.25, 0.3), (0.8, 0.8)):
        w = initlab.Sparse(sparsity=sparsity, std=1.0).sample((10, 20000), seed=1)
        counts = (w == 0).sum(dim=1).double()
        assert ((counts - 20000 * p).abs() <= 6 * math.sqrt(20000 * p * (1 - p))).all(), counts
        assert ((w == 0).sum(dim=0) == round(p * 10)).all()


def test_dirac_keras_layout_is_the_torch_kernel_permuted():
    t = initlab.Dirac(groups=2).sample((8, 4, 3, 5))
    k = initlab.Dirac(groups=2).sample((3, 5, 4, 8), layout="keras")
    assert torch.equal(k, t.permute(2, 3, 1, 0))


def test_stft_layouts_agree_and_describe_matches():
    init = initlab.STFT()
    k = init.sample((16, 3, 9), layout="keras")
    t = init.sample((9, 3, 16), layout="torch")
    torch.testing.assert_close(t.permute(2, 1, 0), k)
    assert torch.equal(k[:, 0], k[:, 2])  # the same basis for every input channel
    d = init.describe((16, 3, 9), layout="keras")
    assert d.variance == pytest.approx(k.double().var(unbiased=False).item(), rel=1e-5)
    assert d.low == pytest.approx(k.min().item(), abs=1e-7) and d.high == pytest.approx(k.max().item(), abs=1e-7)
    assert initlab.STFT(window=[1.0] * 4, scaling=None).get_config()["window"] == [1.0] * 4


def test_meta_tensor_is_refused():
    with pytest.raises(ValueError, match="meta"):
        initlab.GlorotUniform()(torch.empty(3, 4, device="meta"))
