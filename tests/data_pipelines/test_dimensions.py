"""data_pipelines.task_dimensions: the model sizes a config may leave None, for each kind of task,
against what tlx.train's train_and_evaluate and the configs (configs/common.downstream_task)
computed before it, on the real data."""

import pytest

import data_pipelines
from configs import common
from configs.bert import finetune as bert_finetune
from configs.bert import pretrain as bert_pretrain
from configs.cove import translate as cove_translate
from configs.embeddings import glove, word2vec
from data_pipelines import tagging, tasks, translation, vocabularies, words
from data_pipelines.cooccur import GloveOptions
from data_pipelines.skipgram import SkipGramOptions
from data_pipelines.translation import TranslationOptions


def _resolved(module, arg):
    """(config, its task's registered name), as tlx.train.resolve_task registers it."""
    cfg = module.get_config(arg)
    name = data_pipelines.get_task_name(cfg.data.task, vocab=cfg.data.vocab, **cfg.data.options)
    return cfg, name


def _old_dimensions(cfg, name) -> dict:
    """tlx.train.train_and_evaluate's vocab_size / tgt_vocab_size fill, and the num_classes the
    downstream configs set from configs.common.downstream_task."""
    word_corpus = tasks.word_corpus(name)
    if word_corpus is not None:
        vocab_size = word_corpus.vocab_size
    else:
        vocab_size = vocabularies.get_vocabulary(cfg.data.vocab).vocab_size
    old = {"vocab_size": vocab_size}
    if "tgt_vocab_size" in cfg.model:
        old["tgt_vocab_size"] = tasks.target_vocab_size(name)
    if "num_classes" in cfg.model:
        classes = common.downstream_task(cfg.data.task, mixture=True).num_classes
        have = cfg.model.num_classes  # the config's, from the same call
        assert (tuple(have) if isinstance(have, list | tuple) else have) == classes
        old["num_classes"] = classes
    return old


CASES = {
    # name: (config module, arg, the dimensions it must give)
    "bert_pretrain": (bert_pretrain, "runlocal=True", {"vocab_size": 30522}),
    "word2vec": (word2vec, "runlocal=True", None),  # the corpus' min-count words: below
    "glove": (glove, "runlocal=True", None),
    "cove_translate": (cove_translate, "runlocal=True", None),
    "sst2": (bert_finetune, "task=sst2,runlocal=True", {"vocab_size": 30522, "num_classes": 2}),
    "conll2003_ner": (
        bert_finetune,
        "task=conll2003_ner,runlocal=True",
        {"vocab_size": 30522, "num_classes": len(tagging.CONLL2003_TAGS)},
    ),
    "glue_mix": (
        bert_finetune,
        "task=glue_mix,runlocal=True",
        {"vocab_size": 30522, "num_classes": (2, 6, 2, 2)},  # sst2, trec, mrpc, rte
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_old_code_paths(case):
    module, arg, expected = CASES[case]
    cfg, name = _resolved(module, arg)
    dims = data_pipelines.task_dimensions(name, cfg.data.vocab)
    assert dims == _old_dimensions(cfg, name)
    if expected is not None:
        assert dims == expected
    for key, value in dims.items():  # what the config fixes agrees; what it leaves None is filled
        have = cfg.model.get(key)
        if have is not None:
            assert (tuple(have) if isinstance(value, tuple) else have) == value, key


@pytest.mark.parametrize(
    "module, options_class", [(word2vec, SkipGramOptions), (glove, GloveOptions)]
)
def test_word_tasks_take_the_corpus_vocabulary(module, options_class):
    cfg, name = _resolved(module, "runlocal=True")
    corpus_words = words.load_corpus(options_class(**cfg.data.options).corpus_options)
    dims = data_pipelines.task_dimensions(name, cfg.data.vocab)
    assert dims == {"vocab_size": corpus_words.vocab_size}
    assert dims["vocab_size"] != vocabularies.get_vocabulary(cfg.data.vocab).vocab_size


def test_seq2seq_target_vocabulary():
    cfg, name = _resolved(cove_translate, "runlocal=True")
    dims = data_pipelines.task_dimensions(name, cfg.data.vocab)
    target = translation.target_vocabulary(TranslationOptions(**cfg.data.options))
    source = vocabularies.get_vocabulary("words:glove6b")
    assert dims == {"vocab_size": source.vocab_size, "tgt_vocab_size": target.vocab_size}
    assert cfg.model.vocab_size is None and cfg.model.tgt_vocab_size is None


def test_mixture_classes_follow_member_order():
    for members in (("trec", "sst2"), ("rte", "trec", "mrpc")):
        name = data_pipelines.get_task_name(tasks.MIXTURE, tasks=members, rates="")
        want = tuple(data_pipelines.downstream_info(t).num_classes for t in members)
        assert data_pipelines.task_dimensions(name, "bert_uncased")["num_classes"] == want


def test_char_ids_variants_have_the_plain_dimensions():
    for base in ("sst2", tasks.MIXTURE, "causal_lm"):
        vocab = "words:corpus" if base == "causal_lm" else "bert_uncased"
        plain = data_pipelines.get_task_name(base, vocab=vocab)
        name = data_pipelines.get_task_name(base, vocab=vocab, char_ids=True)
        assert name != plain
        assert data_pipelines.task_dimensions(name, vocab) == data_pipelines.task_dimensions(
            plain, vocab
        )
