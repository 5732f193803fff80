"""Pieces every config shares: argument parsing, the default training sections, and what a
downstream config reads from the task registry (`downstream_task`)."""

import dataclasses
import json
import os

import ml_collections

GLOVE6B_DIM = 50  # tlx.wordvec's GloVe 6B is the 50-d release


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'size=mini,runlocal' -> ConfigDict(size='mini', runlocal=True); unknown keys fail."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise KeyError(f"unknown config argument {key!r}; expected one of {sorted(defaults)}")
        default = defaults[key]
        if not value:
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(default)(value)
    return out


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Mesh axes: data (replicas), fsdp (replicas each holding 1/fsdp of params and optimizer
    # state), model (tensor parallel); presets split batches over data x fsdp. mesh_dcn: outer
    # axes across TPU slices or hosts, e.g. {"data": 2} (tlx/partitioning.py docstring).
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1})
    c.mesh_dcn = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "model": 1})
    c.partition_preset = ""  # "" (DEFAULT_RULES) | dp | fsdp | tp | fsdp+tp
    c.partition_rules = ()  # no preset: the whole table (empty: DEFAULT_RULES); else tried first
    c.train = ml_collections.ConfigDict(
        {
            "steps": 1000,  # > 0 wins over epochs; <= 0: from train.epochs
            "epochs": 0.0,  # > 0 (with steps <= 0): epochs x the train split / batch steps
            "batch_size": 32,
            "log_every": 50,
            "eval_every": 500,  # <= 0: once per epoch (needs epochs > 0)
            "eval_steps": 20,  # -1: the whole eval split
            # Accelerator scale (tlx.optim, tlx.train): K slices of the global batch scanned
            # inside one step with a float32 gradient accumulator; batches built ahead and put
            # on device while the step runs; "A,B": a jax.profiler trace of steps A..B in
            # WORKDIR/profile (process 0); the chip's peak for MFU (0: tlx.flops' table by
            # device_kind, None on unknown hardware).
            "microbatches": 1,
            "prefetch": 2,
            "profile_steps": "",
            "peak_tflops_per_device": 0.0,
        }
    )
    c.optim = ml_collections.ConfigDict(
        {
            "lr": 1e-4,
            "warmup_steps": 0,
            "warmup_fraction": 0.0,
            "end_factor": 0.0,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-6,
            "weight_decay": 0.01,
            "grad_clip": 1.0,
            "frozen": [],
        }
    )
    # The training signal (tlx.objectives): name, GPT-1's auxiliary LM coefficient (task
    # objectives only) and the fused LM cross-entropy's chunk (0: materialised logits).
    c.objective = ml_collections.ConfigDict({"name": "", "lm_coef": 0.0, "xent_chunk": 32})
    # What the run evaluates (tlx.evaluators: name -> type + options; logged as NAME/METRIC)
    # and the metric whose best value keeps WORKDIR/best ("" keeps none).
    c.evals = ml_collections.ConfigDict({"eval": {"type": "objective"}})
    c.best_metric = "eval/loss"
    c.best_mode = "min"
    c.checkpoint = ml_collections.ConfigDict(
        {
            "every": 500,
            "max_to_keep": 3,
            "async_save": True,
            # "" : WORKDIR/checkpoints; else any etils.epath path or URL (gs://bucket/run/ckpt)
            "directory": "",
            # Keys allowed to differ from the saved config when the run resumes (beyond
            # tlx.config_checks.RESUMABLE), e.g. ("optim.lr",); ("all",) allows any change.
            "allow_changes": (),
        }
    )
    # Joining a multi-process job (tlx/distributed.py): "auto" joins under launch/multiprocess.sh
    # or a SLURM step of > 1 task, "always" calls jax.distributed.initialize() (TPU pods),
    # "never" stays one process. local_device_ids: "" one GPU per process, "all" every GPU of
    # the node (one process per node), or "0,1,2,3". Ports: JAX_COORDINATOR_PORT.
    c.distributed = ml_collections.ConfigDict(
        {
            "join": "auto",  # auto | always | never
            # auto (JAX tries each) | slurm | gcetpu | gketpu | ompi | mpi4py | deactivate
            "cluster_detection": "auto",
            "local_device_ids": "",
            "initialization_timeout": 300,  # seconds for every process to join
            "heartbeat_timeout": 100,  # seconds before a silent process counts as lost
        }
    )
    c.transfer = ml_collections.ConfigDict(
        {
            "init_from": "",
            "dont_load": [],
            "ignore": [],
            # Word vectors ("glove6b", a tlx word2vec/GloVe run dir, a vectors file) for the
            # table at vectors_param, row i = token i of data.vocab (tlx.wordvec).
            "init_vectors": "",
            "vectors_param": "encoder/embed/embedding",
        }
    )
    c.data = ml_collections.ConfigDict(
        {
            "task": "",
            "vocab": "bert_uncased",
            "seq_len": 128,
            "data_dir": "",  # empty: $TLX_DATA_DIR
            "verify": True,  # check the files the run reads against tlx/data/manifest.json
            "eval_split": "validation",
            "options": ml_collections.ConfigDict(),
        }
    )
    return c


@dataclasses.dataclass(frozen=True)
class DownstreamTask:
    """What a downstream config takes from the task's registry entry (data_pipelines).

    head: the model name's suffix, "classifier" or "tagger" (bert_classifier, gpt_tagger, ...).
    objective: c.objective.name, "classification" or "tagging".
    evaluator: the tlx.evaluators type that scores it, "downstream" or "mixture".
    metric: the metric that picks the best dev checkpoint (the registry's primary metric).
    num_classes: the head's classes; a tuple (one head per member task) for a mixture.
    seq_len: the task's default sequence length (sized for WordPiece pieces).
    """

    kind: str
    head: str
    objective: str
    num_classes: int | tuple[int, ...]
    seq_len: int
    metric: str
    members: tuple[str, ...] = ()  # a mixture's tasks, in task_id order

    @property
    def evaluator(self) -> str:
        return "mixture" if self.members else "downstream"

    @property
    def tagging(self) -> bool:
        return self.kind == "tagging"


def downstream_task(task: str, *, mixture: bool = False) -> DownstreamTask:
    """The registry's answer for `task` (a downstream task, or with mixture=True also glue_mix:
    its default members, sentence kind, one head per member, the longest member seq_len)."""
    import data_pipelines  # the task registry says what head and metric each task needs

    if task == data_pipelines.tasks.MIXTURE:
        if not mixture:
            raise ValueError(f"task={task} (a mixture) is not supported by this config")
        members = data_pipelines.classification.DEFAULT_MIXTURE_TASKS
        infos = [data_pipelines.downstream_info(t) for t in members]
        classes = tuple(i.num_classes for i in infos)
        seq_len = max(i.seq_len for i in infos)
        return DownstreamTask(
            "sentence", "classifier", "classification", classes, seq_len, "average", members
        )
    info = data_pipelines.downstream_info(task)
    tagging = info.kind == "tagging"
    return DownstreamTask(
        info.kind,
        "tagger" if tagging else "classifier",
        "tagging" if tagging else "classification",
        info.num_classes,
        info.seq_len,
        info.primary_metric,
    )


def downstream_training(c: ml_collections.ConfigDict, task: DownstreamTask) -> None:
    """The objective, evaluation and best-checkpoint metric of a downstream task's run."""
    c.objective.name = task.objective
    c.evals = ml_collections.ConfigDict({"eval": {"type": task.evaluator}})
    c.best_metric = f"eval/{task.metric}"
    c.best_mode = "max"


def runlocal(
    c: ml_collections.ConfigDict, *, steps: int, every: int, log_every=None, eval_steps=None
) -> None:
    """Shrinks a config to `steps` CPU steps for the tests (every config runs small): batch 8
    (the 8 test devices), evaluation and checkpoints every `every` steps, no epochs."""
    c.train.epochs = 0.0
    c.train.steps = steps
    c.train.batch_size = 8
    c.train.log_every = log_every or every
    c.train.eval_every = every
    c.checkpoint.every = every
    if eval_steps is not None:
        c.train.eval_steps = eval_steps


def init_source(path: str, shape_keys) -> tuple[dict, str]:
    """(model shape, vocab spec) of a pretrained run or converted checkpoint directory: the
    model keys in `shape_keys` (plus size) from DIR/config.json, and DIR/vocab.txt if present,
    else the run's data.vocab."""
    with open(os.path.join(path, "config.json")) as f:
        src = json.load(f)
    model = {k: v for k, v in src["model"].items() if k in shape_keys or k == "size"}
    if os.path.exists(os.path.join(path, "vocab.txt")):
        vocab = "wordpiece:" + os.path.abspath(os.path.join(path, "vocab.txt"))
    elif src.get("data", {}).get("vocab"):
        vocab = src["data"]["vocab"]
    else:  # e.g. a converted GPT-2: its BPE vocabulary is not a tlx vocabulary (yet)
        raise ValueError(
            f"{path} names no vocabulary (no vocab.txt, no data.vocab in config.json); "
            "finetuning needs the vocabulary its weights were trained with"
        )
    return model, vocab


def pretrained_run(path: str, model_name: str) -> dict:
    """A finished pretraining run's resolved config (WORKDIR/config.json), checked to hold the
    model a feature-transfer config expects."""
    cfg_file = os.path.join(os.path.abspath(path), "config.json")
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(
            f"{path} is not a tlx run directory ({cfg_file} is missing); train one first"
        )
    with open(cfg_file) as f:
        src = json.load(f)
    if src.get("model", {}).get("name") != model_name:
        raise ValueError(
            f"{path} holds a {src.get('model', {}).get('name')!r} run; expected {model_name!r}"
        )
    src["workdir"] = os.path.abspath(path)
    return src


def feature_transfer(
    args: ml_collections.ConfigDict, features: str, cove=None, elmo=None
) -> ml_collections.ConfigDict:
    """A downstream run of tlx.models.contextual (frozen GloVe / CoVe / ELMo features, a BiLSTM
    task model): the part configs/cove/finetune.py and configs/elmo/finetune.py share.
    `cove` / `elmo`: the pretrained run's config.json (pretrained_run), whose params load."""
    task = downstream_task(args.task)
    c = base_config()
    c.model = dict(
        name=f"contextual_{task.head}",
        num_classes=task.num_classes,
        vocab_size=None,  # data.vocab's (tlx.train fills it in)
        features=features,
        embed_dim=GLOVE6B_DIM,
        encoder="bilstm",
        hidden_size=args.hidden,
        pool="max",
        dropout_rate=args.dropout,
        feature_dropout=args.feature_dropout,
        dtype="float32",  # the whole model's, pretrained parts included (tlx.precision)
        param_dtype="float32",
    )
    downstream_training(c, task)
    c.data.task = args.task
    c.data.vocab = "words:glove6b"
    c.data.seq_len = args.seq_len or task.seq_len
    frozen = []
    if features in ("glove", "elmo"):
        c.transfer.init_vectors = "glove6b"  # encoder/embed/embedding
        frozen.append("encoder/embed/.*")
    if cove is not None:
        m = cove["model"]
        c.model.cove = {k: m[k] for k in ("embed_dim", "hidden", "num_layers", "tgt_vocab_size")}
        c.model.cove.src_vocab_size = m["vocab_size"]
        c.transfer.init_from = cove["workdir"]
        c.transfer.dont_load = ["(?!encoder/cove/).*"]  # only the encoder (and its GloVe) transfers
        c.transfer.ignore = ["decoder/.*"]
        frozen.append("encoder/cove/.*")
    if elmo is not None:
        from tlx.models import elmo as elmo_model

        m = elmo["model"]
        shape = elmo_model.config_for_size(m["size"], vocab_size=m["vocab_size"])
        c.model.elmo = {
            k: list(map(list, v)) if k == "filters" else v
            for k, v in dataclasses.asdict(shape).items()
            if k not in ("dtype", "param_dtype", "remat")  # the model section's policy
        }
        c.model.mix = args.mix
        c.model.mix_l2 = args.mix_l2
        c.data.options.char_ids = True
        c.transfer.init_from = elmo["workdir"]
        c.transfer.dont_load = ["(?!encoder/bilm/).*"]  # the biLM loads; GloVe: init_vectors
        c.transfer.ignore = ["softmax/.*"]
        frozen.append("encoder/bilm/.*")
    c.optim.frozen = frozen
    downstream_schedule(c, args, runlocal_seq_len=16)
    return c


def epochs_schedule(c: ml_collections.ConfigDict, epochs: float, batch: int) -> None:
    """`epochs` of the train split in batches of `batch` (train.steps <= 0: the steps come from
    the epochs), logged every 50 steps, the whole dev split scored once per epoch."""
    c.train.epochs = epochs
    c.train.steps = 0  # from train.epochs
    c.train.batch_size = batch
    c.train.log_every = 50
    c.train.eval_every = -1  # every epoch
    c.train.eval_steps = -1  # the whole dev split


def word_vector_run(c: ml_collections.ConfigDict, args, *, log_every: int, runlocal_seq_len: int):
    """What word2vec and GloVe runs share: args.epochs of args.batch rows (no weight decay, no
    clipping, scored once per epoch), evaluation on the intrinsic benchmarks (the best
    SimLex-999 kept) with the vectors written out once, at the end; a few tiny steps on the
    inaugural corpus under args.runlocal."""
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0
    c.train.batch_size = args.batch
    c.train.epochs = args.epochs
    c.train.steps = 0  # from train.epochs
    c.train.eval_every = 0  # once per epoch
    c.train.log_every = log_every
    c.checkpoint.every = 200
    c.evals = ml_collections.ConfigDict(
        {
            "eval": {"type": "word_vectors"},
            "vectors": {"type": "export_word_vectors", "when": "end"},
        }
    )
    c.best_metric = "eval/simlex999/spearman"
    c.best_mode = "max"
    if args.runlocal:
        c.data.seq_len = runlocal_seq_len
        c.data.options.sources = ("inaugural",)
        c.data.options.min_count = 2
        c.model.dim = 16
        runlocal(c, steps=6, every=3)
        c.checkpoint.async_save = False


def downstream_schedule(c: ml_collections.ConfigDict, args, runlocal_seq_len: int) -> None:
    """The training section of the word-level downstream configs (embeddings/classify.py and
    the feature-transfer ones): Adam at args.lr without weight decay (AdamW would decay every
    `embedding`), args.epochs of args.batch, the dev split scored every epoch (best params kept
    in WORKDIR/best), and a few tiny steps under args.runlocal."""
    c.optim.lr = args.lr
    c.optim.weight_decay = 0.0
    epochs_schedule(c, args.epochs, args.batch)
    c.checkpoint.every = 100_000  # resume points; the best dev params are kept separately
    c.checkpoint.max_to_keep = 1
    if args.runlocal:
        c.data.seq_len = runlocal_seq_len
        runlocal(c, steps=4, every=4, log_every=2, eval_steps=2)


def feature_args(arg, **extra) -> ml_collections.ConfigDict:
    """Arguments every feature-transfer config takes (plus `extra`)."""
    return parse_arg(
        arg,
        task="sst2",
        hidden=100,
        dropout=0.5,
        feature_dropout=0.0,
        lr=1e-3,
        batch=32,
        epochs=3.0,
        seq_len=0,  # 0: the task's registry seq_len (sized for WordPiece; words need fewer)
        runlocal=False,
        **extra,
    )
