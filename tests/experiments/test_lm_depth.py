"""The language-model depth benchmark (benchmarks/lm_depth.py): the corpus hash check, the GPT (pre/post-LN),
one training run, the metric functions on synthetic loss curves, the reference init formulas and the
verdict logic. Small models (depth 1–2) and toy corpora keep it to a few seconds."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from tests._benchmarks import load_benchmark


@pytest.fixture(scope="module")
def lm():
    mod = load_benchmark("lm_depth")
    # one thread, as the benchmark runs: these models are tiny, and two threads on a busy 2-core machine
    # spin against each other (backward of a depth-1 width-32 GPT: 0.44 s a step with two, ms with one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield mod
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(lm, tmp_path_factory):
    """Two files, 1000 and 2001 bytes, and their list with hashes."""
    root = tmp_path_factory.mktemp("stdlib")
    files = []
    for name, n in (("a.py", 1000), ("pkg/b.py", 2001)):
        data = bytes((i * 7 + len(name)) % 97 + 30 for i in range(n))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        files.append((name, hashlib.sha256(data).hexdigest()))
    return root, tuple(files)


def test_corpus_checks_every_hash_and_splits_each_file_90_10(lm, toy):
    root, files = toy
    c = lm.load_corpus(root, files)
    # a.py: 100 validation bytes; b.py: int(200.1) = 200
    assert (len(c.train), len(c.val)) == (900 + 1801, 100 + 200)
    a, b = (root / "a.py").read_bytes(), (root / "pkg/b.py").read_bytes()
    assert bytes(c.train.tolist()) == a[:900] + b[:1801] and bytes(c.val.tolist()) == a[900:] + b[1801:]
    assert c.sha256 == hashlib.sha256(a + b).hexdigest()
    wrong = ((files[0][0], "0" * 64), files[1])
    with pytest.raises(ValueError, match=r"a\.py has SHA-256 .* expected 0{64}"):
        lm.load_corpus(root, wrong)
    with pytest.raises(FileNotFoundError, match=r"missing\.py does not exist; --stdlib"):
        lm.load_corpus(root, (("missing.py", "0" * 64),))


def test_the_stated_stdlib_files_match_this_python(lm):
    c = lm.load_corpus()
    assert len(lm.CORPUS_FILES) == 46 and len(c.train) + len(c.val) == 466917


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gpt_is_causal_and_has_the_stated_layout(lm, norm):
    torch.manual_seed(0)
    model = lm.GPT(lm.GPTConfig(depth=2, width=32, heads=4, context=16, norm=norm))
    x = torch.randint(0, 256, (2, 16))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % 256
    out, out2 = model(x), model(y)
    assert out.shape == (2, 16, 256)
    assert torch.equal(out[:, :10], out2[:, :10]) and not torch.allclose(out[:, 10:], out2[:, 10:])
    assert (model.lnf is None) == (norm == "post")
    assert model.head.weight.data_ptr() != model.tok.weight.data_ptr()  # untied, as stated


def test_bad_norm_names_the_argument(lm):
    with pytest.raises(ValueError, match="norm: expected 'pre' or 'post', got 'mid'"):
        lm.GPTConfig(norm="mid")


def test_one_run_trains_and_records_the_metrics(lm, toy):
    corpus = lm.load_corpus(*toy)
    settings = lm.Settings(steps=12, batch=4, context=16, width=32, heads=4, target=100.0)
    r = lm.run_one(lm.RunSpec("pre", 1, "torch", 0, "reference"), settings, corpus)
    assert r["steps_run"] == 12 and len(r["losses"]) == 12 and r["divergence"] is None
    assert r["steps_to_target"] == 1  # every loss is below 100
    assert math.isfinite(r["val_loss"]) and r["val_loss"] < r["init_loss"]  # the toy corpus is periodic: learnable
    again = lm.run_one(lm.RunSpec("pre", 1, "torch", 0, "reference"), settings, corpus)
    assert again["losses"] == r["losses"]  # the seed fixes init and batch order


def test_unigram_loss_is_the_add_one_byte_model_of_the_training_bytes(lm, toy):
    corpus = lm.load_corpus(*toy)
    train, val = corpus.train.tolist(), corpus.val.tolist()
    # the oracle, written out with the standard library: p(b) = (count(b) + 1) / (n + 256)
    want = -sum(math.log((train.count(b) + 1) / (len(train) + 256)) for b in val) / len(val)
    assert lm.unigram_loss(corpus) == pytest.approx(want, rel=1e-12)


def test_main_runs_two_steps_resumes_and_refuses_changed_settings(lm, tmp_path, capsys):
    out = tmp_path / "lm.json"
    argv = ["--norms", "post", "--depths", "1", "--schemes", "torch,auto", "--steps", "2", "--jobs", "1",
            "--out", str(out), "--no-progress"]
    assert lm.main(argv) == 0
    runs = json.loads(out.read_text())["runs"]
    assert sorted(runs) == ["post/1/auto/0/library", "post/1/torch/0/reference"]
    assert all(r["steps_run"] == 2 and math.isfinite(r["val_loss"]) for r in runs.values())
    table = capsys.readouterr().out
    assert "| post | 1 | torch | torch |" in table and "| post | 1 | auto | lib |" in table
    assert lm.main(argv) == 0 and json.loads(out.read_text())["runs"] == runs  # resumed: nothing re-run
    with pytest.raises(SystemExit):
        lm.main([("3" if a == "2" else a) for a in argv])  # --steps 3 into the same file
    err = capsys.readouterr().err
    assert f"--out: {out} holds runs made with other settings (differ: steps)" in err
    assert json.loads(out.read_text())["runs"] == runs  # and the file is untouched
    assert lm.main(["--table", "--out", str(out)]) == 0
    assert "| post | 1 | auto | lib |" in capsys.readouterr().out


def test_running_mean_and_steps_to_target_on_a_synthetic_curve(lm):
    losses = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0]
    assert lm.running_mean(losses, 3) == [5.0, 4.5, 4.0, 3.0, 2.0, 4.0 / 3]
    assert lm.steps_to_target(losses, 3.0, window=3) == 4  # mean(4, 3, 2) = 3.0 <= 3.0 at step 4
    assert lm.steps_to_target(losses, 1.0, window=3) is None  # the last mean is 1.33
    assert lm.steps_to_target(losses, 5.0, window=3) == 1


def test_divergence_finds_nan_and_spikes_at_the_exact_step(lm):
    assert lm.divergence([3.0, 2.0, math.nan, 1.0]) == ("nan", 3)
    assert lm.divergence([3.0, math.inf]) == ("nan", 2)
    flat = [2.0] * 30
    assert lm.divergence(flat, window=1) is None
    # window 1: from step 20 on, a loss > 1.5 × the lowest before it
    spike = [4.0] * 5 + [2.0] * 20 + [3.01, 2.0]
    assert lm.divergence(spike, window=1) == ("spike", 26)
    assert lm.divergence([4.0] * 5 + [2.0] * 20 + [3.0], window=1) is None  # exactly 1.5× is not above it
    early = [2.0] * 5 + [9.0] + [2.0] * 30  # before step 20: Adam's first steps may jump, not counted
    assert lm.divergence(early, window=1) is None
    # window 10: a single outlier of 12.1 lifts the mean of ten 2.0s to 3.01 > 1.5 × 2.0
    assert lm.divergence([2.0] * 25 + [12.1] + [2.0] * 5) == ("spike", 26)
    assert lm.divergence([2.0] * 25 + [12.0] + [2.0] * 5) is None  # mean 3.0, not above 3.0


def _model(lm, norm="pre", depth=2, width=32):
    torch.manual_seed(0)
    return lm.GPT(lm.GPTConfig(depth=depth, width=width, heads=4, context=16, norm=norm))


def _batch():
    return torch.randint(0, 256, (4, 17), generator=torch.Generator().manual_seed(1))


def test_gpt2_reference_is_auto_with_output_projections_over_sqrt_2L(lm):
    a, g = _model(lm), _model(lm)
    lm._auto_unscaled(a, _batch(), 3)  # the reference starts from auto without auto's own residual scaling
    lm._gpt2_reference(g, _batch(), 3)
    for (name, pa), (_, pg) in zip(a.named_parameters(), g.named_parameters(), strict=True):
        factor = 0.5 if name.endswith(("o.weight", "fc2.weight")) else 1.0  # 1/√(2·2)
        assert torch.allclose(pg, pa * factor), name


def test_hf_reference_draws_gpt2s_laws(lm):
    m = _model(lm, depth=4, width=64)
    lm._hf_reference(m, _batch(), 0)
    o = torch.cat([b.o.weight.flatten() for b in m.blocks] + [b.fc2.weight.flatten() for b in m.blocks])
    q = torch.cat([b.q.weight.flatten() for b in m.blocks])
    # sample std of n normal draws has sd σ/√(2n): n = 4·(64² + 64·256) = 81920 (o, fc2) and 16384 (q); 5 SE
    want_o = 0.02 / math.sqrt(8)
    assert abs(o.std().item() - want_o) < 5 * want_o / math.sqrt(2 * o.numel())
    assert abs(q.std().item() - 0.02) < 5 * 0.02 / math.sqrt(2 * q.numel())
    assert all(torch.all(b.ln1.weight == 1) and torch.all(b.q.bias == 0) for b in m.blocks)


def test_deepnet_alpha_folding_reproduces_deepnorms_forward(lm):
    x = _batch()[:, :-1]
    beta_only, folded = _model(lm, "post", depth=3), _model(lm, "post", depth=3)
    lm._deepnet_reference(beta_only, _batch(), 0)
    lm._deepnet_reference(folded, _batch(), 0, fold_alpha=True)
    alpha = 6 ** 0.25
    with torch.no_grad():  # DeepNorm written out: x_{l+1} = LN(α·x_l + f(x_l)), on the β-only weights
        h = beta_only.embed(x)
        for b in beta_only.blocks:
            h = b.ln1(alpha * h + b.attn_branch(h))
            h = b.ln2(alpha * h + b.mlp_branch(h))
        want = beta_only.head(h)
        assert torch.allclose(folded(x), want, atol=1e-5)
        assert not torch.allclose(beta_only(x), want, atol=1e-3)
    with pytest.raises(ValueError, match="fold_alpha: DeepNorm's α folds into post-LN only"):
        lm._deepnet_reference(_model(lm, "pre"), _batch(), 0, fold_alpha=True)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_measured_reference_sets_each_branch_to_rho_times_its_skip(lm, norm):
    m = _model(lm, norm, depth=3)
    batch = _batch()
    lm._measured_reference(m, batch, 0)
    rho = 6 ** -0.5
    with torch.no_grad():  # re-run the corrected model: every branch/skip RMS ratio is ρ
        h = m.embed(batch[:, :-1])
        for b in m.blocks:
            for branch, _, ln in b.branches():
                out = branch(ln(h) if norm == "pre" else h)
                assert lm._rms(out) / lm._rms(h) == pytest.approx(rho, rel=1e-4)
                h = h + out if norm == "pre" else ln(h + out)


def test_mup_reference_uses_the_packages_groups_and_the_papers_init(lm):
    m = _model(lm, width=128)
    groups = lm._mup_reference(m, _batch(), 0)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    b = m.blocks[0]
    # width_mult = 128/32 = 4: hidden matrices lr/4 (MuAdamW), vectors and embeddings lr
    assert lr[id(b.fc1.weight)] == pytest.approx(lm.LR / 4) and lr[id(b.fc1.bias)] == lm.LR
    assert lr[id(m.tok.weight)] == lm.LR and lr[id(m.head.weight)] == lm.LR
    assert torch.all(m.head.weight == 0) and torch.all(b.q.weight == 0) and torch.all(b.ln1.weight == 1)
    assert torch.all(b.ln1.bias == 0) and torch.all(b.fc1.bias == 0)
    assert b.attn_scale == pytest.approx(math.sqrt(8) / 32)
    # fc2: var 1/fan_in = 1/512 at width 128; n = 65536 draws, 5 SE of the sample std
    assert abs(b.fc2.weight.std().item() - 512 ** -0.5) < 5 * 512 ** -0.5 / math.sqrt(2 * 65536)


def test_schemes_say_which_implementation_runs(lm):
    assert lm.SCHEMES["torch"].impl(False) == "reference" and lm.SCHEMES["auto"].impl(False) == "library"
    assert lm.SCHEMES["auto+gpt2"].impl(True) == "reference"
    assert set(lm.reference_formulas()) == set(lm.SCHEMES) - {"auto", "auto+deepnet-a"}


def _row(lm, scheme, val, sd=0.0, seeds=3, nan=0, diverged=0, depth=48, norm="post"):
    return {"norm": norm, "depth": depth, "scheme": scheme, "impl": "reference", "seeds": seeds, "val_mean": val,
            "val_sd": sd, "nan": nan, "diverged": diverged, "reached": 0, "steps_to_target": None}


def test_auto_check_ranks_divergence_first_then_loss_within_the_noise(lm):
    rows = [_row(lm, "torch", 1.50, nan=3, diverged=3), _row(lm, "auto+gpt2", 2.00, 0.03),
            _row(lm, "hf", 2.10, 0.01), _row(lm, "auto", 2.04, 0.03)]
    (c,) = lm.auto_check(rows)
    assert c["best"] == "auto+gpt2"  # torch's 1.50 is the mean of no run: all three NaN'd
    assert c["noise"] == pytest.approx(math.sqrt(2 * 0.03 ** 2 / 3)) and c["gap"] == pytest.approx(0.04)
    assert not c["auto_at_least_as_good"]  # 0.04 > max(0.0245, 0.02)
    rows[-1] = _row(lm, "auto", 2.02, 0.03)
    assert lm.auto_check(rows)[0]["auto_at_least_as_good"]
    rows[-1] = _row(lm, "auto", 1.90, 0.03, diverged=1)  # lower loss, but one spike more than the best
    assert not lm.auto_check(rows)[0]["auto_at_least_as_good"]


def test_summarize_counts_nans_and_keeps_finite_means(lm):
    runs = [{"norm": "post", "depth": 6, "scheme": "torch", "impl": "reference", "val_loss": v,
             "divergence": d, "steps_to_target": s}
            for v, d, s in ((2.0, None, 100), (math.nan, ["nan", 40], None), (2.2, ["spike", 90], 150))]
    (r,) = lm.summarize(runs, unigram=2.25)
    assert (r["seeds"], r["nan"], r["diverged"], r["reached"]) == (3, 1, 2, 2)
    assert r["stalled"] == 1  # 2.2 > 2.25 − 0.1; 2.0 is not; the NaN run is counted as NaN, not stalled
    assert r["val_mean"] == pytest.approx(2.1) and r["steps_to_target"] == 125


def test_results_resume_only_with_the_same_settings(lm, tmp_path):
    out = tmp_path / "r.json"
    meta = {"steps": 10, "lr": 0.001}
    lm.save_results(out, meta, {"k": {"val_loss": 1.0}})
    assert lm.load_results(out, meta) == {"k": {"val_loss": 1.0}}
    assert json.loads(out.read_text())["meta"] == meta
    with pytest.raises(ValueError, match=r"--out: .* other settings \(differ: steps\)"):
        lm.load_results(out, {"steps": 20, "lr": 0.001})


@pytest.mark.parametrize(("argv", "message"), [
    (["--schemes", "torch,nope"], "--schemes: unknown 'nope'; choose from torch, hf"),
    (["--norms", "mid"], "--norms: expected pre and/or post, got 'mid'"),
    (["--jobs", "0"], "--jobs: expected >= 1, got 0"),
])
def test_bad_arguments_are_named(lm, argv, message, capsys):
    with pytest.raises(SystemExit):
        lm.main(argv)
    assert message in capsys.readouterr().err
