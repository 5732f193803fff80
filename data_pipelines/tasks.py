"""SeqIO tasks: `bert_pretrain`, `causal_lm`, the downstream tasks, their variants, `get_dataset`.

Sequence length: downstream tasks take it from seqio's `sequence_length` (truncate + pad in a
preprocessor);
bert_pretrain and causal_lm bake it into their options because sentence pairs (chunks) are built
to a target length before any preprocessor runs, so `get_dataset` routes to the variant
registered for that length.
Determinism: sentence pairs are a function of (seed, split, options); masks come from seqio's
per-example seeds (which `num_epochs` repetition makes new each epoch) mixed with the instance's
global index, so the same (seed, shard) gives the same stream and shards never share randomness.
Sharding: the data source takes the shard itself and yields every num_shards-th instance of a
seed-shuffled global order, so shards are disjoint, balanced within one example, and together
are exactly the unsharded data.
"""

import dataclasses
import hashlib
import pathlib

import seqio
import tensorflow as tf

from data_pipelines import (  # noqa: F401
    bert_pretrain,
    causal_lm,
    chars,
    classification,
    cooccur,
    corpus,
    paths,
    skipgram,
    sources,
    tagging,
    translation,
    vocabularies,
    words,
)
from data_pipelines.bert_pretrain import PretrainOptions
from data_pipelines.causal_lm import CausalLMOptions
from data_pipelines.cooccur import GloveOptions
from data_pipelines.skipgram import SkipGramOptions
from data_pipelines.sources import DOWNSTREAM, TaskInfo
from data_pipelines.translation import TranslationOptions

# task name -> (base, vocab spec, options); lets get_dataset find a task's variant family.
# The options are the base's options class fields; char_ids is kept apart, in _CHAR_IDS.
_VARIANTS: dict[str, tuple[str, str, dict]] = {}
# char_ids=True variant (task or mixture) -> the same variant without char ids.
_CHAR_IDS: dict[str, str] = {}
# Pretraining bases: their options class, whose seq_len get_dataset routes on.
_PRETRAIN = {
    "bert_pretrain": PretrainOptions,
    "causal_lm": CausalLMOptions,
    "skipgram": SkipGramOptions,
    "glove": GloveOptions,
}
# Word-embedding tasks: their vocabulary is the corpus' own min-count word list.
_WORD_TASKS = {"skipgram": skipgram, "glove": cooccur}
# Sequence-to-sequence tasks: (options class, register).
_SEQ2SEQ = {"multi30k_en_de": (TranslationOptions, translation.register)}


@dataclasses.dataclass(frozen=True)
class DownstreamOptions:
    """Data options of every downstream task, passed on as register(name, vocab, **options).

    framing: "bert" (`[CLS] a [SEP] b [SEP]`) or "gpt" (GPT-1's `[CLS] a [SEP] b [MASK]`); the
    two differ only in the last non-padding token (see vocabularies.frame_ids).
    """

    framing: str = "bert"

    def __post_init__(self):
        if self.framing not in vocabularies.FRAMINGS:
            raise ValueError(
                f"framing must be one of {vocabularies.FRAMINGS}, got {self.framing!r}"
            )


# ---------------------------------------------------------------------------- variants


MIXTURE = "glue_mix"


def mixture_members(name: str) -> list[tuple[str, str]] | None:
    """[(member task name, base task)] of a registered classification mixture, else None."""
    if name not in classification._MIXTURES:
        return None
    return [(f"{name}.{t}", t) for t in classification.mixture_tasks(name)]


def mixture_info(name: str) -> TaskInfo:
    """A mixture trains one classifier head per member; its dev score is the members' average
    primary metric (the per-task metrics are reported as TASK/METRIC)."""
    tasks = classification.mixture_tasks(name)
    widest = max(DOWNSTREAM[t][0].num_classes for t in tasks)
    seq_len = max(DOWNSTREAM[t][0].seq_len for t in tasks)
    labels = tuple(str(i) for i in range(widest))
    return TaskInfo(
        "sentence", labels, None, "average", seq_len=seq_len, title=f"mixture of {tasks}"
    )


def downstream_info(name: str) -> TaskInfo:
    """The TaskInfo of a downstream task, by base name, registered variant name, or mixture
    member name (MIXTURE.TASK)."""
    if mixture_members(name) is not None:
        return mixture_info(name)
    base = _downstream_base(name)
    if base is None:
        raise ValueError(f"{name!r} is not a downstream task; known: {sorted(DOWNSTREAM)}")
    return DOWNSTREAM[base][0]


def _downstream_base(name: str) -> str | None:
    """The downstream base task of a base, variant or mixture member name, else None."""
    base = _VARIANTS.get(name, (name,))[0]
    if base not in DOWNSTREAM and "." in base and base.rsplit(".", 1)[1] in DOWNSTREAM:
        base = base.rsplit(".", 1)[1]
    return base if base in DOWNSTREAM else None


def downstream_tasks(network: bool = False) -> tuple[str, ...]:
    """The registered downstream base tasks, in registration order; with network=False (the
    default) only those read from $TLX_DATA_DIR, not the `*_tfds` ones TFDS downloads."""
    return tuple(n for n, (info, _) in DOWNSTREAM.items() if network or not info.needs_network)


def split_sizes(name: str, data_dir=None) -> dict[str, int] | None:
    """{split: examples} of a file-backed downstream base task (reads its files), else None."""
    if name in classification.DATASETS:
        splits = classification.DATASETS[name].info.splits
        return {s: len(classification.split_rows(name, s, data_dir)) for s in splits}
    if name in tagging.CORPORA:
        return {s: len(tagging.read_split(name, s, data_dir)) for s in tagging.SPLITS}
    return None


def carved_splits(name: str) -> tuple[str, ...]:
    """The splits of a downstream base task cut from one file by a content hash (TaskData.carve)."""
    data = classification.DATASETS.get(name)
    return tuple(s for s in data.info.splits if data.carved(s)) if data else ()


def base_tasks() -> tuple[str, ...]:
    return (*_PRETRAIN, *_SEQ2SEQ, *DOWNSTREAM)


def _register_char_ids(name: str, plain: str, vocab_spec: str) -> None:
    """Registers `name`: the task `plain` with a last preprocessor adding `char_ids` [L, 50],
    the characters of each `input_ids` token of `vocab_spec` (data_pipelines.chars)."""
    task = seqio.TaskRegistry.get(plain)
    features = dict(task.output_features)
    if "input_ids" not in features or "char_ids" in features:
        raise ValueError(
            f"char_ids=True needs a task with input_ids (and no char_ids of its own); task "
            f"{plain!r} has features {sorted(features)}"
        )
    seqio.TaskRegistry.add_provider(
        name,
        task.replace(
            name=name,
            preprocessors=[*task.preprocessors, chars.make_char_ids_preprocessor(vocab_spec)],
            output_features={**features, "char_ids": chars.char_ids_feature()},
        ),
    )


def _char_ids_mixture(plain: str) -> str:
    """The mixture `plain` (from get_mixture_name) with char ids: the same members in task_id
    order at the same rates, each a char_ids variant named `<name>.<task>` like theirs."""
    digest = hashlib.sha256(repr((plain, "char_ids")).encode()).hexdigest()[:10]
    name = f"{MIXTURE}__{digest}"
    if name not in seqio.MixtureRegistry.names():
        rates = seqio.MixtureRegistry.get(plain).rate_per_task_name
        vocab = classification.mixture_vocab(plain)
        members = []
        for member, task in mixture_members(plain):
            if f"{name}.{task}" not in seqio.TaskRegistry.names():
                _register_char_ids(f"{name}.{task}", member, vocab)
            members.append((f"{name}.{task}", rates[member]))
        seqio.MixtureRegistry.add(name, members)
        # What get_mixture_name records, so mixture_members / mixture_vocab / split_files and
        # downstream_info treat it as the mixture it is.
        classification._MIXTURES[name] = classification.mixture_tasks(plain)
        classification._MIXTURE_VOCABS[name] = vocab
    _CHAR_IDS[name] = plain
    return name


def get_task_name(base: str, vocab: str = vocabularies.DEFAULT_VOCAB, **options) -> str:
    """Registers (once) the task for (base, vocab, options) and returns its name.

    Defaults give the plain base name; anything else a deterministic `base__<hash>` name.
    Options: bert_pretrain PretrainOptions, causal_lm CausalLMOptions, downstream tasks
    DownstreamOptions (framing="bert" | "gpt"). `glue_mix` takes tasks (sequence), rates ('' =
    proportional to train size, or 'sst2=1;trec=2;...') and framing.
    Every task with `input_ids` (all but skipgram and glove, whose rows are word-id pairs of
    the corpus' own vocabulary), and glue_mix, also takes char_ids (bool, default False): True
    adds ELMo's `char_ids` [L, 50], the characters of each input token of `vocab`
    (data_pipelines.chars), in a last preprocessor; its variant has a name of its own.
    """
    char_ids = options.pop("char_ids", False)
    if not isinstance(char_ids, bool):
        raise TypeError(f"char_ids must be True or False, got {char_ids!r}")
    if base == MIXTURE:
        opts = dict(options)
        tasks = tuple(opts.pop("tasks", classification.DEFAULT_MIXTURE_TASKS))
        rates = opts.pop("rates", "") or None
        framing = opts.pop("framing", "bert")
        if opts:
            raise TypeError(
                f"{MIXTURE} takes options tasks, rates, framing, char_ids; got {sorted(opts)}"
            )
        if isinstance(rates, str):
            pairs = [item.partition("=") for item in rates.split(";") if item]
            rates = {k.strip(): float(v) for k, _, v in pairs}
        name = classification.get_mixture_name(tasks, rates, vocab, framing)
        return _char_ids_mixture(name) if char_ids else name
    if char_ids and base in _WORD_TASKS:
        raise ValueError(
            f"char_ids=True: task {base!r} has no input_ids to spell (its rows are word ids of "
            "the corpus' own vocabulary)"
        )
    if base in _PRETRAIN:
        options_class = _PRETRAIN[base]
    elif base in _SEQ2SEQ:
        options_class = _SEQ2SEQ[base][0]
    elif base in DOWNSTREAM:
        options_class = DownstreamOptions
    else:
        raise ValueError(f"unknown base task {base!r}; known: {base_tasks()}")
    opts = options_class(**options)
    non_default = {
        k: v for k, v in dataclasses.asdict(opts).items() if v != getattr(options_class(), k)
    }
    if vocab != vocabularies.DEFAULT_VOCAB:
        non_default["vocab"] = vocab
    if char_ids:
        non_default["char_ids"] = True
    if non_default:
        digest = hashlib.sha256(repr(sorted(non_default.items())).encode()).hexdigest()[:10]
        name = f"{base}__{digest}"
    else:
        name = base
    # Only bert_uncased tasks are registered at import (its file is read lazily); an sp<N>
    # vocabulary is trained here, when a variant using it is first asked for.
    plain = get_task_name(base, vocab, **options) if char_ids else None
    if name not in seqio.TaskRegistry.names():
        if char_ids:
            _register_char_ids(name, plain, vocab)
        elif base == "bert_pretrain":
            bert_pretrain.register(name, vocab, opts)
        elif base == "causal_lm":
            causal_lm.register(name, vocab, opts)
        elif base in _WORD_TASKS:
            _WORD_TASKS[base].register(name, vocab, opts)
        elif base in _SEQ2SEQ:
            _SEQ2SEQ[base][1](name, vocab, opts)
        else:
            DOWNSTREAM[base][1](name, vocab, **dataclasses.asdict(opts))
    _VARIANTS[name] = (base, vocab, dataclasses.asdict(opts))
    if char_ids:
        _CHAR_IDS[name] = plain
    return name


def word_corpus(task_name: str):
    """The words.WordCorpus a word-embedding task (skipgram, glove) trains on, else None."""
    base, _, options = _VARIANTS.get(task_name, (task_name, None, None))
    if base not in _WORD_TASKS:
        return None
    opts = _PRETRAIN[base](**(options or {}))
    return words.load_corpus(opts.corpus_options)


def split_files(task_name: str, split: str, data_dir=None) -> list[pathlib.Path]:
    """The data files reading `split` of a registered task or mixture opens, in a fixed order.

    They include the vocabulary's file (vocabularies.vocab_files) and the files a derived cache
    is built from when it is missing: the corpus behind an sp<N> or words:corpus vocabulary,
    the token cache and the word corpus; train.de.gz behind the Multi30k target words. The
    `*_tfds` tasks and `tfds:` corpus sources read no local files.
    """
    task = seqio.get_mixture_or_task(task_name)
    if split not in task.splits:
        raise ValueError(f"task {task_name!r} has splits {tuple(task.splits)}, not {split!r}")
    root = paths.data_dir(data_dir)
    members = mixture_members(task_name)
    if members is not None:  # seqio skips the members that lack the split
        files = [
            f
            for member, _ in members
            if split in seqio.get_mixture_or_task(member).splits
            for f in split_files(member, split, root)
        ]
        return list(dict.fromkeys(files))
    base, vocab, options = _VARIANTS.get(task_name, (task_name, vocabularies.DEFAULT_VOCAB, {}))
    if base not in base_tasks() and "." in base:  # a mixture member, MIXTURE.TASK
        mixture, base = base.rsplit(".", 1)
        vocab = classification.mixture_vocab(mixture)
    if base in _WORD_TASKS:  # their vocabulary is the corpus' own words
        sources_ = _PRETRAIN[base](**options).sources
        files = [f for s in sources_ for f in corpus.source_files(root, s)]
    else:
        files = vocabularies.vocab_files(vocab, root)
    if base in ("bert_pretrain", "causal_lm"):
        files += [
            f for s in _PRETRAIN[base](**options).sources for f in corpus.source_files(root, s)
        ]
    elif base in _SEQ2SEQ:
        files += translation.split_files(split, root)
    elif base in classification.DATASETS:
        files += classification.split_files(base, split, root)
    elif base in tagging.CORPORA:
        files.append(tagging.split_file(base, split, root))
    elif base not in _WORD_TASKS and not base.endswith("_tfds"):
        raise ValueError(f"split_files does not know the files of task {task_name!r}")
    return list(dict.fromkeys(files))


def target_vocab_size(task_name: str) -> int:
    """Size of a sequence-to-sequence task's target (decoder) vocabulary."""
    task = seqio.get_mixture_or_task(task_name)
    if "decoder_target_ids" not in task.output_features:
        raise ValueError(f"task {task_name} has no decoder targets (not a seq2seq task)")
    return task.output_features["decoder_target_ids"].vocabulary.vocab_size


def task_dimensions(task_name: str, vocab: str) -> dict:
    """The sizes a model takes from its task, for a registered task or mixture (get_task_name)
    read with vocabulary spec `vocab`:

    vocab_size      input vocabulary: a word-embedding task's (skipgram, glove) corpus min-count
                    words (word_corpus(task_name).vocab_size), else vocab's
    tgt_vocab_size  sequence-to-sequence tasks only: the decoder's target vocabulary
    num_classes     downstream tasks only: the labels (downstream_info); a mixture's is the
                    tuple of its members' counts in task_id order (one head per member)
    """
    corpus_words = word_corpus(task_name)
    if corpus_words is not None:
        dims = {"vocab_size": corpus_words.vocab_size}
    else:
        dims = {"vocab_size": vocabularies.get_vocabulary(vocab).vocab_size}
    if "decoder_target_ids" in seqio.get_mixture_or_task(task_name).output_features:
        dims["tgt_vocab_size"] = target_vocab_size(task_name)
    members = mixture_members(task_name)
    if members is not None:
        dims["num_classes"] = tuple(downstream_info(m).num_classes for m, _ in members)
    elif _downstream_base(task_name) is not None:
        dims["num_classes"] = downstream_info(task_name).num_classes
    return dims


def _sequence_lengths(task: seqio.Task, seq_len: int) -> dict[str, int] | None:
    if task.name in _VARIANTS and _VARIANTS[task.name][0] in _WORD_TASKS:
        return None  # fixed-shape rows built by the source itself
    lengths = {k: seq_len for k, f in task.output_features.items() if f.rank == 1}
    if "char_ids" in task.output_features:  # trimmed as input_ids are, [L, MAX_CHARS]
        lengths["char_ids"] = [seq_len, chars.MAX_CHARS]
    if task.name in _VARIANTS and _VARIANTS[task.name][0] == "bert_pretrain":
        max_predictions = PretrainOptions(**_VARIANTS[task.name][2]).max_predictions
        for k in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
            lengths[k] = max_predictions
    return lengths


def get_dataset(
    task_name: str,
    *,
    split: str,
    seq_len: int,
    seed: int,
    shuffle: bool,
    shard_index: int = 0,
    num_shards: int = 1,
    num_epochs: int | None = None,
) -> tf.data.Dataset:
    """Unbatched fixed-shape examples of this process' shard, deterministic given (seed, shard).

    num_epochs=None repeats forever; bert_pretrain masks are re-drawn every epoch.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} not in [0, num_shards={num_shards})")
    if task_name in _VARIANTS and _VARIANTS[task_name][0] in _PRETRAIN:
        base, vocab, options = _VARIANTS[task_name]
        if options["seq_len"] != seq_len:
            char_ids = task_name in _CHAR_IDS
            task_name = get_task_name(
                base, vocab, **{**options, "seq_len": seq_len}, char_ids=char_ids
            )
    task = seqio.get_mixture_or_task(task_name)
    return task.get_dataset(
        sequence_length=_sequence_lengths(task, seq_len),
        split=split,
        shuffle=shuffle,
        seed=seed,
        shard_info=seqio.ShardInfo(shard_index, num_shards) if num_shards > 1 else None,
        num_epochs=num_epochs,
        use_cached=False,
    )


for _base in base_tasks():
    get_task_name(_base)
