"""Sharded initialization and inspection on real process groups: gloo on CPU, 2 and 4 processes.

One spawn per world size runs every scenario (starting a process — importing torch — dominates the cost,
3–5 s each on a loaded 2-core machine); rank 0 sends back the gathered tensors and reports, every rank
its own checks. The parent, which has no process group, is the single process the issue compares with:
it builds the same models and plans and applies them with ``rng="counter"``, and the sharded results
must equal those **bit for bit** (statistics: within float tolerance — sums over another split of the
batch round differently).

Under pytest-xdist (``make test`` runs two workers) the tests of this module may land on both workers.
The spawns are shared through the session's common temporary directory: under an exclusive file lock,
the first worker to need a world size runs it and pickles the results, the other reads them, so each
world size is spawned once per session and two spawns never run at once. (``xdist_group`` would keep
the module on one worker, but pytest-xdist 3.8's ``--dist loadgroup`` does not group under pytest 9.2,
which no longer reads the node id it rewrites.)

Processes rendezvous through a FileStore in a temporary directory and gloo talks over loopback only
(``GLOO_SOCKET_IFNAME=lo``): nothing leaves the machine. A spawn that hangs is killed after
``TIMEOUT`` seconds and fails the tests.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import sys
import tempfile
import time
import traceback
import warnings

import pytest
import torch

import initlab
from initlab.experiments.gpt import GPT, GPTConfig, tp_plan
from tests._sharding import CASES, WHOLE, Holder, holder_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="loopback gloo rendezvous and the file lock are set up for Linux")

TIMEOUT = 300
SEED = 1234
CFG = GPTConfig(vocab=250, dim=64, n_layers=2, n_heads=4, ffn_dim=100, bias=True)  # 250 rows: 63/63/63/61 on 4
CFG_EVEN = GPTConfig(vocab=256, dim=64, n_layers=2, n_heads=4, ffn_dim=128)  # FSDP2 over TP needs even dims
TOKENS = (torch.arange(2 * 8) * 7 % 250).view(2, 8)
META_BATCH = torch.zeros(2, 8, dtype=torch.long, device="meta")
# Every layer kind the plan knows, plus whole-tensor (owner) entries: orthogonal, delta-free matrices.
RULES = {"*.wv.weight": initlab.Orthogonal(), "layers.0.feed_forward.w2.weight": initlab.Sparse(0.2, 0.02),
         "layers.1.attention.wo.weight": initlab.Identity(0.5), "*.wq.weight": initlab.TruncNormal(0.0, 0.1, -0.05, 0.2)}


def placements(world: int) -> list[tuple[str, tuple[int, ...], list]]:
    from torch.distributed.tensor import Replicate, Shard

    if world == 2:
        return [("S0", (2,), [Shard(0)]), ("S1", (2,), [Shard(1)]), ("R", (2,), [Replicate()])]
    return [("S0", (4,), [Shard(0)]), ("S1", (4,), [Shard(1)]), ("S0S1", (2, 2), [Shard(0), Shard(1)]),
            ("RS1", (2, 2), [Replicate(), Shard(1)])]


#: A few entries in bfloat16 and on shapes with an empty shard (3 rows over 4 ranks: 1/1/1/0).
EXTRA = [("he_bf16", initlab.HeUniform(), (10, 14), torch.bfloat16), ("trunc_bf16", initlab.TruncatedNormal(0, .2), (10, 14),
         torch.bfloat16), ("ortho_bf16", initlab.Orthogonal(), (10, 14), torch.bfloat16),
         ("he_empty", initlab.HeNormal(), (3, 7), torch.float32), ("ortho_empty", initlab.Orthogonal(), (3, 7), torch.float32),
         ("sparse_empty", initlab.Sparse(0.3), (3, 7), torch.float32)]


def catalogue_params(world: int) -> list[tuple[str, object, tuple[int, ...], torch.dtype, str]]:
    """(key, initializer, shape, dtype, placement label) for every parameter of the catalogue scenario."""
    out = []
    for label, _, pl in placements(world):
        for name, init, shape, _ in CASES:
            if all(getattr(p, "dim", 0) < len(shape) for p in pl):
                out.append((f"{name}@{label}", init, shape, torch.float32, label))
    for name, init, shape, dtype in EXTRA:
        out.append((f"{name}@S0", init, shape, dtype, "S0"))
    return out


def build_gpt(cfg: GPTConfig, kind: str, world: int):
    """GPT on meta, sharded: ``fsdp`` (FSDP2 per block and root), ``tp`` (Colwise/Rowwise), ``2d`` (TP on
    mesh['tp'], then FSDP2 on mesh['dp']); not yet materialized."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    mesh = init_device_mesh("cpu", (world,)) if kind != "2d" else init_device_mesh(
        "cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    with torch.device("meta"):
        m = GPT(cfg)
    if kind in ("tp", "2d"):
        parallelize_module(m, mesh if kind == "tp" else mesh["tp"], tp_plan(m))
    if kind in ("fsdp", "2d"):
        dp = mesh if kind == "fsdp" else mesh["dp"]
        for blk in m.layers:
            fully_shard(blk, mesh=dp)
        fully_shard(m, mesh=dp)
    return m


def _gather(model) -> dict[str, torch.Tensor]:
    from initlab.distributed import is_dtensor

    return {n: (p.full_tensor() if is_dtensor(p) else p.detach()).clone() for n, p in model.named_parameters()}


def _local(model) -> dict[str, torch.Tensor]:
    from initlab.distributed import local_tensor

    return {n: local_tensor(p).clone() for n, p in model.named_parameters()}


class Flaky(initlab.RandomNormal):
    """A user initializer (no counter law: computed whole on an owner) that fails where told to."""

    armed = False

    def __init__(self, where: str, bad_rank: int) -> None:
        super().__init__(0.0, 0.1)
        self.where, self.bad_rank = where, bad_rank

    def _describe(self, shape, layout, fans):
        import torch.distributed as dist

        if self.armed and self.where == "describe" and dist.get_rank() == self.bad_rank:
            raise ValueError("this rank's describe refuses the shape")
        return super()._describe(shape, layout, fans)

    def _fill(self, work, desc, gen):
        if self.armed and self.where == "fill":
            raise RuntimeError("the user initializer blew up while computing")
        work.normal_(0.0, 0.1, generator=gen)


def scenarios(rank: int, world: int, tmp: str) -> dict:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import empty as dt_empty

    res: dict = {"timings": {}}
    clock = time.perf_counter()
    # 1. every catalogue initializer on DTensors of every placement (uneven, empty shards, bf16 included)
    meshes = {(world,): init_device_mesh("cpu", (world,))}
    if world == 4:
        meshes[(2, 2)] = init_device_mesh("cpu", (2, 2))
    shape_of = {label: (mesh, pl) for label, mesh, pl in placements(world)}
    params = catalogue_params(world)
    tensors = []
    for _, _, shape, dtype, label in params:
        mesh, pl = shape_of[label]
        tensors.append(dt_empty(*shape, dtype=dtype, device_mesh=meshes[mesh], placements=pl))
    holder = Holder(tensors)
    plan = holder_plan([(shape, init) for _, init, shape, _, _ in params])
    t0 = time.perf_counter()
    plan.apply(SEED, model=holder)
    res["catalogue_s"] = time.perf_counter() - t0
    gathered = _gather(holder)
    if rank == 0:
        res["catalogue"] = {key: gathered[f"p{i}"] for i, (key, *_) in enumerate(params)}
        res["catalogue_rng"] = {key: plan.entries[i].rng for i, (key, *_) in enumerate(params)}

    res["timings"][("catalogue", rank)] = time.perf_counter() - clock
    # 2. whole models: FSDP2, tensor parallel, FSDP2 + TP on a 2-D mesh
    kinds = [("fsdp", CFG), ("tp", CFG if world == 2 else CFG_EVEN)] + ([("2d", CFG_EVEN)] if world == 4 else [])
    for kind, cfg in kinds:
        m = build_gpt(cfg, kind, world)
        if kind == "fsdp":  # planned before sharding would be the same; here: on meta, after fully_shard
            with torch.device("meta"):
                twin = GPT(cfg)
            try:  # without the twin: a clear error, and FSDP2's state untouched
                initlab.plan(m, "auto", example_input=META_BATCH, rules=RULES)
                res[("no_twin", kind)] = None
            except ValueError as e:
                res[("no_twin", kind)] = str(e)
            plan = initlab.plan(m, "auto", example_input=META_BATCH, rules=RULES, twin=twin)
        elif kind == "tp":  # tensor parallel on meta traces fine: plan the sharded model itself
            plan = initlab.plan(m, "auto", example_input=META_BATCH, rules=RULES)
        else:
            with torch.device("meta"):
                twin = GPT(cfg)
            plan = initlab.plan(m, "auto", example_input=META_BATCH, rules=RULES, twin=twin)
        m.to_empty(device="cpu")
        plan.apply(seed=SEED)
        st = _gather(m)
        with torch.no_grad():  # the forward reads FSDP2's padded buffers and the TP shards: did the fill land?
            y = m(TOKENS)
        y = y.full_tensor() if hasattr(y, "full_tensor") else y
        if rank == 0:
            res[("model", kind)] = st
            res[("forward", kind)] = y.detach().clone()
            res[("rng", kind)] = {e.path: e.rng for e in plan.entries}
            res[("streams", kind)] = [(s.name, s.n_branches, s.placement) for s in plan.residual or []]
            res[("placements", kind)] = {n: str(getattr(p, "placements", "plain")) for n, p in m.named_parameters()}
        # 3. inspect on the sharded model: rank r runs its shard of the batch (FSDP2: data parallel)
        batch = inspect_tokens(world) if kind == "fsdp" else inspect_tokens(1)
        b = batch.shape[0] // (world if kind == "fsdp" else 1)
        report = initlab.inspect(m, batch[rank * b:(rank + 1) * b] if kind == "fsdp" else batch, recommend=False)
        report.to_json(os.path.join(tmp, f"report_{kind}_{rank}.json"))
        res[("report_text", kind, rank)] = str(report)
        with torch.no_grad():  # inspect left the sharded model working: the same forward as before
            y2 = m(TOKENS)
        same = torch.equal(y2.full_tensor() if hasattr(y2, "full_tensor") else y2, y)
        res[("forward_after_inspect", kind, rank)] = same
        if rank == 0:
            res[("report", kind)] = report.to_dict()
        res["timings"][(kind, rank)] = time.perf_counter() - clock

    # 4. failures: every rank raises the same error, and no rank changed anything
    m = build_gpt(CFG, "fsdp", world)
    with torch.device("meta"):
        twin = GPT(CFG)
    m.to_empty(device="cpu")
    initlab.plan(m, "torch", twin=twin).apply(seed=SEED)
    for where in ("describe", "fill"):
        flaky = Flaky(where, world - 1)
        plan = initlab.plan(m, "torch", rules={"layers.1.attention.wv.weight": flaky}, twin=twin)
        flaky.armed = True
        before = _local(m)
        try:
            plan.apply(seed=SEED + 1)
            msg = None
        except RuntimeError as e:
            msg = str(e)
        after = _local(m)
        res[("fail", where, rank)] = {"msg": msg, "unchanged": all(torch.equal(before[k], after[k]) for k in before)}
    try:
        initlab.plan(m, "torch", twin=twin).apply(seed=0, rng="torch")
        res[("rng_torch", rank)] = None
    except ValueError as e:
        res[("rng_torch", rank)] = str(e)
    res["timings"][("failures", rank)] = time.perf_counter() - clock
    dist.barrier()
    return res


def inspect_tokens(world: int) -> torch.Tensor:
    """64 sequences of 4 tokens per rank: rank 0's shard holds the 64 inputs the cosine statistic reads."""
    return (torch.arange(64 * world * 4) * 13 % 250).view(64 * world, 4)


def _entry(rank: int, world: int, tmp: str) -> None:
    started = time.perf_counter()
    import faulthandler

    crash_log = open(os.path.join(tmp, f"error_{rank}_crash.txt"), "w")  # noqa: SIM115 (open until exit)
    faulthandler.enable(crash_log)  # a crash in native code still says where it happened
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        ready = time.perf_counter()
        out = scenarios(rank, world, tmp)
        out["timings"][("start", rank)] = ready - started
    except BaseException:
        with open(os.path.join(tmp, f"error_{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()
    with open(os.path.join(tmp, f"{rank}.pkl"), "wb") as f:
        pickle.dump(out, f)


_RUNS: dict[int, tuple[dict, list[str]]] = {}


@pytest.fixture(scope="session")
def gloo(tmp_path_factory):
    """``gloo(world)``: every rank's results merged (rank 0's tensors) and the files the ranks wrote, from
    one spawn per world size and session (see the module docstring); a failed spawn fails every test
    that needs it, with its ranks' tracebacks, without spawning again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the session's workers

    def get(world: int) -> tuple[dict, list[str]]:
        if world not in _RUNS:
            _RUNS[world] = _shared_run(root, world)
        return _RUNS[world]

    return get


def _shared_run(root, world: int) -> tuple[dict, list[str]]:
    import fcntl

    done = root / f"gloo_{world}.pkl"
    with open(root / "gloo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one spawn at a time, each world size once
        if not done.exists():
            try:
                outcome = ("ok", _spawn(world))
            except Exception as err:
                outcome = ("error", f"{type(err).__name__}: {err}")
            tmp = done.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(outcome, f)
            tmp.rename(done)
        with open(done, "rb") as f:
            status, value = pickle.load(f)
    if status == "error":
        raise RuntimeError(value)
    return value


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _spawn(world: int) -> tuple[dict, list[str]]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_entry, args=(world, tmp), nprocs=world, join=False, start_method="spawn")
        deadline = time.monotonic() + TIMEOUT
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world}-process gloo run did not finish in {TIMEOUT} s")
        except BaseException as err:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            errors = "\n".join(_read(os.path.join(tmp, f)) for f in sorted(os.listdir(tmp)) if f.startswith("error_"))
            raise RuntimeError(f"gloo run with {world} processes failed:\n{errors}") from err
        merged: dict = {"timings": {}}
        for r in range(world):
            with open(os.path.join(tmp, f"{r}.pkl"), "rb") as f:
                out = pickle.load(f)
            merged["timings"].update(out.pop("timings"))
            merged.update(out)
        return merged, sorted(f for f in os.listdir(tmp) if f.startswith("report_"))


# -- the single-process references ---------------------------------------------------------------------


@functools.cache
def catalogue_reference(world: int) -> dict[str, torch.Tensor]:
    params = catalogue_params(world)
    plan = holder_plan([(shape, init) for _, init, shape, _, _ in params])
    with torch.device("meta"):
        ref = Holder([torch.empty(shape, dtype=dtype) for _, _, shape, dtype, _ in params])
    plan.apply(SEED, rng="counter", model=ref, device="cpu")
    return {key: ref.get_parameter(f"p{i}").detach() for i, (key, *_) in enumerate(params)}


@functools.cache
def model_reference(cfg: GPTConfig) -> GPT:
    with torch.device("meta"):
        m = GPT(cfg)
    initlab.plan(m, "auto", example_input=META_BATCH, rules=RULES).apply(SEED, rng="counter", device="cpu")
    return m


def _cfg(kind: str, world: int) -> GPTConfig:
    return CFG if kind == "fsdp" or (kind == "tp" and world == 2) else CFG_EVEN


KINDS = [(2, "fsdp"), (2, "tp"), (4, "fsdp"), (4, "tp"), (4, "2d")]


# -- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 4])
def test_every_catalogue_initializer_is_bit_identical_across_shardings(gloo, world):
    got, _ = gloo(world)
    ref = catalogue_reference(world)
    assert set(got["catalogue"]) == set(ref)
    bad = [key for key in ref if not torch.equal(got["catalogue"][key], ref[key])]
    assert not bad, f"sharded != single process for {bad}"
    for key, rng in got["catalogue_rng"].items():
        name = key.split("@")[0]
        if name in WHOLE or name.startswith("ortho_"):
            assert rng.startswith("torch (whole on rank "), (key, rng)
        else:
            assert rng == "counter", (key, rng)


@pytest.mark.parametrize("world,kind", KINDS)
def test_sharded_gpt_equals_single_process(gloo, world, kind):
    got, _ = gloo(world)
    ref = dict(model_reference(_cfg(kind, world)).named_parameters())
    st = got[("model", kind)]
    assert set(st) == set(ref)
    for name, t in st.items():
        assert torch.equal(t, ref[name].detach()), (name, got[("placements", kind)][name])
    if kind == "2d":  # FSDP2 over TP really produced strided shards
        assert any("_StridedShard" in p for p in got[("placements", kind)].values())
    # auto's residual scaling needs the stream: found through tensor parallelism's from_local/all_reduce too
    assert got[("streams", kind)] == [("layers", 2 * _cfg(kind, world).n_layers, "pre")]
    rngs = got[("rng", kind)]
    assert rngs["layers.0.attention.wv.weight"].startswith("torch (whole on rank ")
    assert rngs["layers.0.attention.wq.weight"] == "counter"


@pytest.mark.parametrize("world,kind", KINDS)
def test_forward_uses_the_filled_values(gloo, world, kind):
    got, _ = gloo(world)
    with torch.no_grad():
        ref = model_reference(_cfg(kind, world))(TOKENS)
    torch.testing.assert_close(got[("forward", kind)], ref, rtol=1e-5, atol=1e-5)
    assert all(got[("forward_after_inspect", kind, r)] for r in range(world))


@pytest.mark.parametrize("world", [2, 4])
def test_meta_fsdp_model_asks_for_a_twin(gloo, world):
    got, _ = gloo(world)
    msg = got[("no_twin", "fsdp")]
    assert msg is not None and "FSDP2 refuses a forward pass there" in msg and "twin=" in msg


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("where", ["describe", "fill"])
def test_a_failing_initializer_changes_nothing_on_any_rank(gloo, world, where):
    got, _ = gloo(world)
    outcomes = [got[("fail", where, r)] for r in range(world)]
    assert all(o["unchanged"] for o in outcomes)
    msgs = {o["msg"] for o in outcomes}
    assert len(msgs) == 1 and None not in msgs, msgs  # the same error on every rank
    msg = msgs.pop()
    assert "nothing was changed on any rank" in msg
    assert f"[rank {world - 1}] 'layers.1.attention.wv.weight'" in msg if where == "describe" else \
        "the user initializer blew up while computing" in msg


@pytest.mark.parametrize("world", [2, 4])
def test_torch_rng_is_refused_on_dtensors(gloo, world):
    got, _ = gloo(world)
    msgs = {got[("rng_torch", r)] for r in range(world)}
    assert len(msgs) == 1 and "rng: 'torch' cannot fill DTensor parameters reproducibly" in msgs.pop()


def _close(a, b, rel: float) -> bool:
    if a is None or b is None or isinstance(a, (str, bool, list, tuple, dict)):
        return a == b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-9


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_inspect_equals_single_process(gloo, world):
    """FSDP2 is data parallel: the report over every rank's shard equals one process's on the whole batch.
    Tolerance 1e-4 relative: float32 forwards of 64-input shards and of the whole batch round differently
    (GEMM blocking), ~1e-6; sums over ranks in float64 add nothing."""
    got, files = gloo(world)
    with torch.no_grad():
        ref = initlab.inspect(model_reference(CFG), inspect_tokens(world), recommend=False).to_dict()
    rep = got[("report", "fsdp")]
    assert rep["meta"]["ranks"] == world and rep["meta"]["batch_size"] == 64 * world
    assert len(rep["calls"]) == len(ref["calls"])
    for a, b in zip(ref["calls"], rep["calls"], strict=True):
        for key in ("in_shape", "out_shape", "in_std", "in_mean", "out_std", "out_mean", "saturation", "dead",
                    "grad_norm", "cosine", "live_cosine", "z_std"):
            assert _close(a[key] if not isinstance(a[key], list) else tuple(a[key]),
                          b[key] if not isinstance(b[key], list) else tuple(b[key]), 1e-4), (a["path"], key, a[key], b[key])
    for a, b in zip(ref["blocks"], rep["blocks"], strict=True):
        for key in ("in_std", "out_std", "branch_std", "correlation"):
            assert _close(a[key], b[key], 1e-4), (a["path"], key)
    for a, b in zip(ref["params"], rep["params"], strict=True):
        assert _close(a["std"], b["std"], 1e-9) and _close(a["mean"], b["mean"], 1e-9) and _close(a["norm"], b["norm"], 1e-9)
        assert b["grad_norm"] is None  # not measured on DTensor parameters (module docstring)
    assert _close(ref["meta"]["loss_value"], rep["meta"]["loss_value"], 1e-4)
    assert [f["kind"] for f in ref["findings"]] == [f["kind"] for f in rep["findings"]]
    # only rank 0 prints the report and writes files
    assert files == sorted(["report_fsdp_0.json", "report_tp_0.json"] + (["report_2d_0.json"] if world == 4 else []))
    assert "initlab.inspect" in got[("report_text", "fsdp", 0)] and "Layer calls" in got[("report_text", "fsdp", 0)]
    assert got[("report_text", "fsdp", 1)].strip() == f"initlab.inspect: rank 1 of {world}; rank 0 prints the report"


@pytest.mark.parametrize("world,kind", [(2, "tp"), (4, "tp"), (4, "2d")])
def test_tensor_parallel_inspect_has_exact_parameter_statistics(gloo, world, kind):
    got, _ = gloo(world)
    rep = got[("report", kind)]
    ref = initlab.inspect(model_reference(_cfg(kind, world)), inspect_tokens(1), recommend=False).to_dict()
    for a, b in zip(ref["params"], rep["params"], strict=True):
        assert a["name"] == b["name"]
        assert _close(a["std"], b["std"], 1e-9) and _close(a["mean"], b["mean"], 1e-9), a["name"]
    assert "tensor parallelism" in rep["meta"]["sharding"]
