"""A run's config checked at the boundary: values that cannot work, and changes on resume.

`check_values` runs before anything is built or written: a non-positive step count, batch size
or cadence, a batch the data-parallel devices cannot split, an out-of-range rate or probability
is a ConfigError naming the key (and the device count), never a crash deep in XLA or tf.data.

`resume_changes` compares a resumed run's config with the one it was started with (its saved
`config.json`). Only the keys in RESUMABLE may differ (run length and cadences, where the data
lives); anything else (model, optimizer, data, seed, batch size) would make the resumed run a
different experiment under the same name, so it is an error listing every changed key
(old -> new), unless the user names the keys in `checkpoint.allow_changes` (or "all").
"""

import json
import math

import ml_collections
from etils import epath

from tlx.errors import ConfigError

# Keys that may change when a run resumes: how long it runs, how often it logs, evaluates and
# saves, what it evaluates, where it reads its data from, and the override list itself.
RESUMABLE = (
    "train.steps",
    "train.epochs",
    "train.log_every",
    "train.eval_every",
    "train.eval_steps",
    "checkpoint.every",
    "checkpoint.max_to_keep",
    "checkpoint.async_save",
    "checkpoint.allow_changes",
    "checkpoint.directory",  # where the checkpoints are is not what they hold
    "data.data_dir",
    "data.verify",
    "transfer.init_from",  # ignored on resume: the run's own checkpoint comes first
    "evals",  # what is evaluated, not what is trained (best_metric may not change)
    "multihost",
    "distributed",  # how processes join (tlx.distributed): SLURM vs TPU, per-GPU vs per-node
    # How a step is computed, not what it computes: the same math to roundoff.
    "train.microbatches",
    "train.prefetch",
    "train.profile_steps",
    "train.peak_tflops_per_device",
    "model.remat",
    "model.attention_impl",
    # How the arrays are laid out over devices (restores reshard: tests/test_checkpoint_mesh.py)
    "mesh",
    "mesh_dcn",
    "partition_preset",
)

# Keys removed since runs were saved: present only in an older config.json, no change on resume.
REMOVED = ("data.num_shards",)  # the data stream is indexed (data_pipelines.indexed)

# Keys added after runs were saved, with the value an older config.json implicitly had: an
# absent key equal to its default is no change on resume.
ADDED_DEFAULTS = {
    "train.microbatches": 1,
    "train.prefetch": 2,
    "train.profile_steps": "",
    "train.peak_tflops_per_device": 0.0,
    "model.dtype": "float32",
    "model.param_dtype": "float32",
    "model.remat": "none",
    "model.attention_impl": "xla",
    "mesh.fsdp": 1,
    "mesh_dcn.data": 1,
    "mesh_dcn.fsdp": 1,
    "mesh_dcn.model": 1,
    "partition_preset": "",
    "checkpoint.directory": "",
}


def _flat(tree, prefix="") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def _normal(cfg) -> dict:
    """A config as plain JSON values (tuples become lists), flattened to dotted keys."""
    if isinstance(cfg, ml_collections.ConfigDict):
        cfg = json.loads(cfg.to_json_best_effort())
    return _flat(json.loads(json.dumps(cfg)))


def resume_changes(saved: dict, cfg: ml_collections.ConfigDict) -> list[str]:
    """'key: old -> new' for every key that differs from the saved config and may not."""
    old, new = _normal(saved), _normal(cfg)
    allowed = set(RESUMABLE) | set(cfg.checkpoint.get("allow_changes", ()) or ())
    if "all" in allowed:
        return []
    missing = "<absent>"
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing and key in ADDED_DEFAULTS and b == ADDED_DEFAULTS[key]:
            continue
        if b is missing and key in REMOVED:
            continue
        if a != b and key not in allowed and not any(key.startswith(f"{k}.") for k in allowed):
            changes.append(f"{key}: {a!r} -> {b!r}")
    return changes


def check_resume(saved_path: str, cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError listing every disallowed change against the saved config.json."""
    text = epath.Path(saved_path).read_text()  # a local path, or beside checkpoints at a URL
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{saved_path} is not valid JSON ({e}); the run's checkpoints are intact. "
            "Restore the file, or move it away to resume with the current config"
        ) from e
    changes = resume_changes(saved, cfg)
    if changes:
        keys = ", ".join(f'"{c.split(":")[0]}"' for c in changes)
        raise ConfigError(
            f"this run resumes from the checkpoints in {saved_path.rsplit('/', 1)[0]}, but its "
            f"config differs from the one it was started with ({saved_path}):\n  "
            + "\n  ".join(changes)
            + "\nUse a new --workdir for a different experiment, or allow the change "
            f"explicitly: --config.checkpoint.allow_changes='({keys},)'"
        )


def check_positive(cfg, key: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive integer")


def _get(cfg, key: str, default=None):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict | ml_collections.ConfigDict) or part not in node:
            return default
        node = node[part]
    return node


def _in_range(cfg, key: str, low: float, high: float, *, open_high=False) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    ok = (
        isinstance(value, int | float)
        and low <= value
        and (value < high if open_high else value <= high)
    )
    if not ok:
        bracket = ")" if open_high else "]"
        raise ConfigError(f"{key}={value!r}: must be in [{low}, {high}{bracket}")


def check_values(cfg: ml_collections.ConfigDict, data_parallel: int) -> None:
    """ConfigError for a value that cannot work; `data_parallel` is the number of devices the
    batch is split over (the mesh's data-parallel axes)."""
    epochs = cfg.train.get("epochs", 0.0)
    if not (isinstance(epochs, int | float) and math.isfinite(epochs) and epochs >= 0):
        raise ConfigError(f"train.epochs={epochs!r}: must be >= 0 (0: use train.steps)")
    per_epoch = epochs > 0  # steps and the evaluation cadence come from the split's size
    for key in ("train.batch_size", "train.log_every", "checkpoint.every"):
        check_positive(cfg, key)
    if not per_epoch:
        check_positive(cfg, "train.steps")
    if not isinstance(cfg.train.eval_every, int) or (cfg.train.eval_every <= 0 and not per_epoch):
        raise ConfigError(
            f"train.eval_every={cfg.train.eval_every!r}: must be positive (or <= 0 with "
            "train.epochs > 0: once per epoch)"
        )
    if cfg.train.eval_steps != -1:
        check_positive(cfg, "train.eval_steps")
    if cfg.checkpoint.max_to_keep is not None:
        check_positive(cfg, "checkpoint.max_to_keep")
    batch = cfg.train.batch_size
    dcn = dict(cfg.get("mesh_dcn") or {})
    if batch % data_parallel:
        raise ConfigError(
            f"train.batch_size={batch} is not divisible by the {data_parallel} data-parallel "
            f"devices (data x fsdp) of mesh {dict(cfg.mesh)}"
            + (f" x mesh_dcn {dcn}" if math.prod(dcn.values()) > 1 else "")
            + f"; use a multiple of {data_parallel}"
        )
    fsdp = (_get(cfg, "mesh.fsdp", 1), dcn.get("fsdp", 1))
    named = any(
        axis == "fsdp" or (isinstance(axis, list | tuple) and "fsdp" in axis)
        for _, axis in cfg.get("partition_rules") or ()
    )
    if fsdp != (1, 1) and not cfg.get("partition_preset") and not named:
        raise ConfigError(
            f"mesh.fsdp={fsdp[0]} (mesh_dcn.fsdp={fsdp[1]}) but partition_preset='' "
            "(DEFAULT_RULES) places nothing over fsdp, so its devices would repeat each "
            "other's work; set partition_preset to fsdp or fsdp+tp (or dp, tp: batch only)"
        )
    micro = cfg.train.get("microbatches", 1)
    if isinstance(micro, bool) or not isinstance(micro, int) or micro <= 0 or batch % micro:
        raise ConfigError(
            f"train.microbatches={micro!r}: must be a positive integer dividing "
            f"train.batch_size={batch} (the step's batch, scanned in that many slices)"
        )
    if _get(cfg, "data.seq_len") is not None and cfg.data.seq_len < 0:
        raise ConfigError(f"data.seq_len={cfg.data.seq_len!r}: must be >= 0")
    lr = cfg.optim.get("lr")
    if isinstance(lr, int | float) and lr < 0:
        raise ConfigError(f"optim.lr={lr!r}: must be >= 0")
    _in_range(cfg, "optim.warmup_fraction", 0.0, 1.0)
    for key in ("optim.b1", "optim.b2"):
        _in_range(cfg, key, 0.0, 1.0, open_high=True)
    for key in ("optim.warmup_steps", "optim.grad_clip", "optim.weight_decay", "optim.end_factor"):
        value = _get(cfg, key)
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{key}={value!r}: must be >= 0")
    for key in _normal(cfg.model):
        if key.endswith("dropout") or key.endswith("dropout_rate"):
            _in_range(cfg, f"model.{key}", 0.0, 1.0, open_high=True)
    options = cfg.data.get("options", {})
    for key in ("window", "negatives", "min_count", "x_max", "alpha", "dupe_factor"):
        value = options.get(key)
        if isinstance(value, int | float) and not value > 0:
            raise ConfigError(f"data.options.{key}={value!r}: must be positive")
    for key in ("sample", "mask_rate", "masked_lm_prob"):
        _in_range(cfg, f"data.options.{key}", 0.0, 1.0)


def check_data(saved: dict | None, now: dict, ckpt_dir: str) -> None:
    """The training stream a resumed run continues must be the one it was saved on: same task,
    seed and data (input_pipeline.data_fingerprint), else the examples would silently drift."""
    if saved is None:  # a checkpoint from before data fingerprints: nothing to compare
        print(
            f"note: {ckpt_dir} was saved before tlx indexed its data (no data fingerprint): "
            "resuming unchecked, and the examples after the resume follow the indexed order",
            flush=True,
        )
        return
    changed = [k for k in ("task", "seed", "fingerprint") if saved.get(k) != now.get(k)]
    if changed:
        detail = ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(
            f"the training data changed under the run saved in {ckpt_dir} ({detail}): resuming "
            "would continue a different example stream. Restore the data files (tlx.data "
            "verify lists them) or start a new --workdir"
        )
