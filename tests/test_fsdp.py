"""FSDP presets and the hybrid mesh: every (data, fsdp, model) mesh trains like one device,
fsdp=8 holds 1/8 of the parameters per device, and checkpoints move between meshes."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs.bert import pretrain as bert_pretrain
from configs.gpt import pretrain as gpt_pretrain
from tlx import checkpoint, config_checks, partitioning
from tlx import steps as tlx_steps
from tlx.errors import ConfigError

# (data, fsdp, model) -> the preset that uses those axes; (1, 1, 1) with no preset is the reference.
MESHES = {(8, 1, 1): "dp", (1, 8, 1): "fsdp", (2, 4, 1): "fsdp", (2, 2, 2): "fsdp+tp"}
B, L, V, STEPS = 8, 32, 512, 5
# Dropout off: the meshes must agree on the arithmetic; (2, 2, 2) under fsdp+tp draws other
# dropout masks than one device does (losses 3e-4 apart after 5 steps at rate 0.1).
SHAPE = dict(
    size="custom",
    num_layers=1,
    hidden_size=32,  # embed: divides fsdp=8
    num_heads=2,  # divides model=2
    intermediate_size=64,
    vocab_size=V,
    max_position=L,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)


def _cfg(family, mesh, preset):
    module = bert_pretrain if family == "bert" else gpt_pretrain
    cfg = module.get_config("size=tiny,runlocal")
    cfg.unlock()
    cfg.model.update(SHAPE)
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.model = mesh
    cfg.partition_preset = preset  # steps.build reads it
    return cfg


def _batches(family, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        ids = rng.integers(5, V, (B, L)).astype(np.int32)
        if family == "gpt":  # two packed documents a row, the last 4 positions padding
            cut = rng.integers(4, L - 8, (B, 1))
            col = np.arange(L)[None]
            doc = np.where(col < cut, 1, 2) * (col < L - 4)
            pos = np.where(col < cut, col, col - cut) * (doc > 0)
            out.append({"input_ids": ids, "document_ids": doc.astype(np.int32), "positions": pos})
            continue
        p = 4
        positions = np.sort(rng.permuted(np.tile(np.arange(1, L), (B, 1)), axis=1)[:, :p])
        out.append(
            {
                "input_ids": ids,
                "input_mask": np.ones((B, L), np.int32),
                "segment_ids": (np.arange(L)[None] >= L // 2).repeat(B, 0).astype(np.int32),
                "masked_lm_positions": positions.astype(np.int32),
                "masked_lm_ids": rng.integers(5, V, (B, p)).astype(np.int32),
                "masked_lm_weights": np.ones((B, p), np.float32),
                "next_sentence_labels": rng.integers(0, 2, (B,)).astype(np.int32),
                "example_weight": np.ones((B,), np.float32),
            }
        )
    for b in out:
        for k, v in b.items():
            b[k] = v.astype(np.int32) if v.dtype == np.int64 else v
    return out


def _train(cfg, batches):
    devices = jax.devices()[: int(np.prod(list(cfg.mesh.values())))]
    setup = tlx_steps.build(cfg, batches[0], devices=devices)
    state = setup.init(jax.random.PRNGKey(0))
    losses = []
    for b in batches:
        state, metrics = setup.train_step(state, jax.device_put(b, setup.batch_sharding))
        total, count = metrics["loss"]  # summed over the scored targets, and their number
        losses.append(float(total / count))
    return setup, state, losses


@pytest.fixture(scope="module")
def runs():
    """{(family, mesh): (setup, state, losses)}, each mesh compiled once for the whole file."""
    assert jax.device_count() == 8, "conftest sets 8 host CPU devices"
    out = {}
    for family in ("bert", "gpt"):
        batches = _batches(family)
        for mesh, preset in {(1, 1, 1): "", **MESHES}.items():
            out[family, mesh] = _train(_cfg(family, mesh, preset), batches)
    return out


@pytest.mark.parametrize("family", ["bert", "gpt"])
@pytest.mark.parametrize("mesh", list(MESHES), ids=lambda m: "x".join(map(str, m)))
def test_every_mesh_trains_like_one_device(runs, family, mesh):
    reference = runs[family, (1, 1, 1)][2]
    assert all(np.isfinite(reference)) and reference[0] != reference[-1], "loss must move"
    setup, _, losses = runs[family, mesh]
    assert dict(setup.mesh.shape) == dict(zip(("data", "fsdp", "model"), mesh))
    np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-5, err_msg=MESHES[mesh])


def test_fsdp8_holds_an_eighth_of_the_params_per_device(runs):
    setup, state, _ = runs["bert", (1, 8, 1)]
    report = partitioning.param_bytes(state.params, setup.state_shardings.params)
    leaves = jax.tree.leaves(state.params)
    assert report.total == sum(x.nbytes for x in leaves)
    leftover = sum(b for _, b in report.replicated)
    assert report.per_device == (report.total - leftover) // 8 + leftover
    assert leftover < report.total / 25, str(report)  # 8 biases (2.6% at these tiny widths)
    assert all("bias" in path for path, _ in report.replicated), str(report)
    # What device 0 really holds, not what the shardings promise.
    assert sum(x.addressable_shards[0].data.nbytes for x in leaves) == report.per_device
    layer = state.params["encoder"]["layers"]["layer_0"]
    assert layer["mlp"]["wi"]["kernel"].sharding.spec == P("fsdp", None)  # [embed, mlp]
    assert layer["attention"]["out_kernel"].sharding.spec == P(None, None, "fsdp")
    assert setup.batch_sharding.spec == P(("data", "fsdp"))
    adam = [x for x in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))]
    mu = [x for x in adam if hasattr(x, "mu")][0].mu
    assert mu["encoder"]["layers"]["layer_0"]["mlp"]["wi"]["kernel"].sharding.spec == P(
        "fsdp", None
    )
    assert f"{len(report.replicated)} replicated leaves" in str(report)


def test_fsdp_tp_shards_over_both_axes(runs):
    setup, state, _ = runs["gpt", (2, 2, 2)]
    layer = state.params["decoder"]["layers"]["layer_0"]
    assert layer["mlp"]["wi"]["kernel"].sharding.spec == P("fsdp", "model")
    assert layer["attention"]["query_kernel"].sharding.spec == P("fsdp", "model", None)
    embed = state.params["decoder"]["token_embed"]["embedding"]  # [vocab, embed]
    assert embed.sharding.spec == P("model", "fsdp")
    assert embed.addressable_shards[0].data.size * 4 == embed.size


def test_checkpoint_moves_between_meshes(runs, tmp_path):
    source_setup, state, _ = runs["bert", (1, 8, 1)]
    mngr = checkpoint.manager(str(tmp_path / "ckpt"), every=1, async_save=False)
    checkpoint.save(mngr, STEPS, state, {"step": STEPS}, force=True)
    mngr.wait_until_finished()
    expect = jax.tree.map(np.asarray, {"params": state.params, "opt_state": state.opt_state})
    for mesh in [(2, 2, 2), (1, 1, 1)]:
        target, _, _ = runs["bert", mesh]
        step, params, opt_state, _ = checkpoint.restore_latest(
            mngr, target.abstract_state, target.state_shardings
        )
        assert step == STEPS
        got = {"params": params, "opt_state": opt_state}
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, got), expect)
        for leaf, sharding in zip(
            jax.tree.leaves(params), jax.tree.leaves(target.state_shardings.params)
        ):
            assert leaf.sharding == sharding
    mngr.close()
    assert source_setup.mesh.shape["fsdp"] == 8


def test_default_rules_are_todays(runs):
    """No preset: DEFAULT_RULES as given, and the new size-1 fsdp axis changes no bit."""
    cfg = _cfg("bert", (1, 1, 1), "")
    assert partitioning.rules_from_config(cfg.partition_rules) == partitioning.DEFAULT_RULES
    del cfg.mesh["fsdp"]  # a config.json from before the fsdp axis
    setup, _, losses = _train(cfg, _batches("bert"))
    assert dict(setup.mesh.shape) == {"data": 1, "model": 1}
    assert losses == runs["bert", (1, 1, 1)][2]


def test_fallback_shards_large_untagged_tables_only():
    mesh = partitioning.make_mesh({"data": 1, "fsdp": 8, "model": 1})
    f32 = np.float32

    def boxed(shape, names=None):
        leaf = jax.ShapeDtypeStruct(shape, f32)
        return leaf if names is None else nn.Partitioned(leaf, names=names)

    params = {
        "glove": boxed((4000, 50), ("vocab", "embed")),  # 50 does not divide 8: vocab takes it
        "untagged": boxed((30, 1024)),  # no names: its largest dividing dim
        "filters": boxed((5, 16, 64), (None, "embed", "mlp")),  # embed rule applies
        "bias": boxed((4000,), ("vocab",)),  # 16 KB < FSDP_MIN_BYTES: stays whole
        "odd": boxed((4001, 33)),  # no dimension divides 8: stays whole
    }
    rules = partitioning.rules_from_config((), "fsdp", mesh)
    specs = {k: s.spec for k, s in partitioning.param_shardings(params, mesh, rules).items()}
    assert specs == {
        "glove": P("fsdp", None),
        "untagged": P(None, "fsdp"),
        "filters": P(None, "fsdp", None),
        "bias": P(None),
        "odd": P(None, None),
    }
    # Under tp no rule names fsdp, so there is no fallback either.
    tp = partitioning.param_shardings(params, mesh, partitioning.rules_from_config((), "tp", mesh))
    assert tp["untagged"].spec == P(None, None)
    # Optimizer state follows the fallback.
    abstract = nn.unbox(params)
    opt = jax.eval_shape(optax.adam(1e-3).init, abstract)
    shardings = partitioning.param_shardings(params, mesh, rules)
    derived = partitioning.derived_shardings(opt, abstract, shardings, mesh)
    assert derived[0].mu["untagged"].spec == P(None, "fsdp")
    assert derived[0].nu["glove"].spec == P("fsdp", None)
    report = partitioning.param_bytes(abstract, shardings)
    assert [p for p, _ in report.replicated] == ["odd", "bias"]


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    id: int
    process_index: int
    slice_index: int | None = None
    platform: str = "cpu"
    device_kind: str = "cpu"


def test_hybrid_grid_puts_the_outer_factor_across_processes_and_slices():
    hosts = [FakeDevice(i, i // 4) for i in range(8)]  # 2 processes x 4 devices
    grid = partitioning.hybrid_device_grid({"data": -1, "fsdp": 2, "model": 1}, {"data": 2}, hosts)
    assert grid.shape == (4, 2, 1)  # data = 2 per process x 2 processes
    owner = np.vectorize(lambda d: d.process_index)(grid)
    assert (owner[:2] == 0).all() and (owner[2:] == 1).all()  # fsdp stays inside a process
    slices = [FakeDevice(i, i // 2, slice_index=i // 4) for i in range(8)]  # 2 slices of 2 hosts
    grid = partitioning.hybrid_device_grid({"data": 1, "fsdp": 4, "model": 1}, {"data": 2}, slices)
    assert grid.shape == (2, 4, 1)
    assert {d.slice_index for d in grid[0].ravel()} == {0}
    with pytest.raises(ConfigError, match="spans 4 slices; the devices are in 2"):
        partitioning.hybrid_device_grid({"data": -1}, {"data": 4}, slices)
    with pytest.raises(ConfigError, match="lacks"):
        partitioning.hybrid_device_grid({"data": -1}, {"fsdp": 2}, hosts)


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"not a preset.*'dp', 'fsdp', 'tp', 'fsdp\+tp'"):
        partitioning.rules_from_config((), "zero3")
    with pytest.raises(ConfigError, match="does not divide 8 devices"):
        partitioning.make_mesh({"data": -1, "fsdp": 3, "model": 1})
    with pytest.raises(ConfigError, match="needs 12 devices"):
        partitioning.make_mesh({"data": 2, "fsdp": 3, "model": 2})
    with pytest.raises(ConfigError, match="one slice and one process"):
        partitioning.make_mesh({"data": -1, "fsdp": 1, "model": 1}, dcn={"data": 2})
    cfg = _cfg("bert", (2, 4, 1), "fsdp")
    cfg.train.batch_size = 12
    with pytest.raises(
        ConfigError, match=r"not divisible by the 8 data-parallel devices \(data x fsdp\)"
    ):
        config_checks.check_values(cfg, 8)
    cfg.train.batch_size, cfg.partition_preset, cfg.partition_rules = 16, "", ()
    with pytest.raises(ConfigError, match="places nothing over fsdp"):
        config_checks.check_values(cfg, 8)
    assert (
        partitioning.data_parallel_size(partitioning.make_mesh({"data": 2, "fsdp": 4, "model": 1}))
        == 8
    )
