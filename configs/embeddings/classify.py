r"""Three ways to transfer an embedding layer: a word-vector model from scratch, on frozen
pretrained vectors, or on finetuned ones (Kim 2014's CNN-rand / -static / -non-static).

  python -m tlx.train --config=configs/embeddings/classify.py:task=sst2,mode=frozen \
      --workdir=runs/emb/sst2_glove_frozen                  # GloVe 6B 50d, Kim's CNN
  python -m tlx.train \
      --config=configs/embeddings/classify.py:task=conll2003_ner,mode=finetune,init=runs/glove \
      --workdir=runs/emb/conll_glove_finetune               # a tlx GloVe run, BiLSTM tagger
  python launch/embedding_table.py --inits=glove6b,runs/word2vec --workdir=runs/emb_table

The three modes differ in one line each: `scratch` leaves transfer.init_vectors empty (same
vocabulary, same dim, random U[-0.25, 0.25] rows), `frozen` adds optim.frozen=['encoder/embed/.*'],
`finetune` trains everything.

Arguments (after the colon, comma-separated):
  task     any downstream task of `python -m tlx.tasks list`: a sentence or pair task trains a
           WordClassifier (a pair is encoded as its whole `[CLS] a [SEP] b [SEP]` row), a
           tagging task a WordTagger (one tag per word).
  mode     scratch | frozen | finetune.
  init     glove6b (default): the 400,000-word GloVe 6B vocabulary and its 50-d vectors;
           or DIR, a tlx word2vec / GloVe run: vocabulary DIR/words.txt, vectors DIR/vectors.txt
           (dim from its header). Task words outside the vocabulary are [UNK]. `scratch` uses
           init's vocabulary and dim too, so it is always comparable with its frozen / finetune
           rows; scratch with no pretrained run in mind is scratch with the glove6b vocabulary.
  encoder  bag | cnn | bilstm; default cnn for sentence / pair tasks, bilstm for tagging (a
           tagger takes cnn or bilstm).
  hidden   bag hidden layer / LSTM units per direction (100); dropout (0.5) before the
           classifier (Kim 2014); embed_dropout (0.0) on the word vectors; pool max | final
           (bilstm sentence vector).
  lr, batch, epochs   Adam 1e-3 with linear decay, batch 50 (Kim 2014), 5 epochs; the dev split
           is scored every epoch and the best dev params are kept in WORKDIR/best.
  runlocal a few steps on tiny batches, for tests.

No weight decay: AdamW decays every `embedding` (tlx.optim._decays), which would pull finetuned
vectors toward zero and make finetune differ from frozen in more than the trained table.

Expected: the full table (launch/embedding_table.py) has not been run yet. Smoke runs on a shared
2-core CPU with GloVe 6B (batch 50): SST-2 frozen CNN, 40 steps (0.29 epoch): dev accuracy 64.9
in 0.3 min; finetune, 30 steps: 62.0 in 0.4 min; CoNLL-2003 finetune BiLSTM, 30 steps: span F1
0.2 (still all "O"). A 5-epoch run is ~700 steps on SST-2 and ~1,400 on CoNLL-2003 (~9
steps/s at seq_len 128). For scale, Kim (2014, Table 2) reports test accuracy rand / static /
non-static of 82.7 / 86.8 / 87.2 on SST-2 (phrase-level training set) and 91.2 / 92.8 / 93.6 on
TREC, with 300-d word2vec vectors.
"""

import os

from configs import common

MODES = ("scratch", "frozen", "finetune")
GLOVE6B = "glove6b"


def vectors_dim(path: str) -> int:
    """Dimension of a word2vec text file, from its `V D` header (or its first row)."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().split()
    if len(first) == 2 and all(x.isdigit() for x in first):
        return int(first[1])
    if len(first) < 2:
        raise ValueError(f"{path}: first line {first!r} is neither a `V D` header nor a vector")
    return len(first) - 1


def vectors_source(init: str) -> tuple[str, str, int]:
    """(data.vocab spec, transfer.init_vectors, dim) of `init` (glove6b or a run dir)."""
    if init == GLOVE6B:
        return "words:glove6b", GLOVE6B, common.GLOVE6B_DIM
    run = os.path.abspath(init)
    missing = [f for f in ("words.txt", "vectors.txt") if not os.path.isfile(os.path.join(run, f))]
    if missing:
        raise FileNotFoundError(
            f"init={init!r}: expected 'glove6b' or a tlx word2vec / GloVe run dir holding "
            f"words.txt and vectors.txt; {run} lacks {', '.join(missing)}"
        )
    dim = vectors_dim(os.path.join(run, "vectors.txt"))
    return f"words:{os.path.join(run, 'words.txt')}", run, dim


def get_config(arg=None):
    from tlx.models import word_encoders

    args = common.parse_arg(
        arg,
        task="sst2",
        mode="frozen",
        init=GLOVE6B,
        encoder="",
        hidden=100,
        dropout=0.5,
        embed_dropout=0.0,
        pool="max",
        lr=1e-3,
        batch=50,
        epochs=5.0,
        runlocal=False,
    )
    if args.mode not in MODES:
        raise KeyError(f"mode must be one of {MODES}, got {args.mode!r}")
    task = common.downstream_task(args.task)
    encoder = args.encoder or ("bilstm" if task.tagging else "cnn")
    allowed = word_encoders.TAGGER_ENCODERS if task.tagging else word_encoders.ENCODERS
    if encoder not in allowed:
        raise KeyError(f"encoder={encoder!r} for {task.kind} task {args.task}; expected {allowed}")
    vocab, vectors, dim = vectors_source(args.init)

    c = common.base_config()
    c.model = dict(
        name=f"word_{task.head}",
        num_classes=task.num_classes,
        vocab_size=None,  # the data vocabulary's (tlx.train fills it in)
        embed_dim=dim,
        encoder=encoder,
        hidden_size=args.hidden,
        widths=(3, 4, 5),
        filters=100,
        activation="relu",
        pool=args.pool,
        dropout_rate=args.dropout,
        embed_dropout=args.embed_dropout,
        dtype="float32",  # compute: float32 | bfloat16 (tlx.precision)
        param_dtype="float32",  # master weights
    )
    common.downstream_training(c, task)
    c.data.task = args.task
    c.data.vocab = vocab
    c.data.seq_len = task.seq_len
    c.transfer.init_vectors = "" if args.mode == "scratch" else vectors
    c.optim.frozen = ["encoder/embed/.*"] if args.mode == "frozen" else []
    common.downstream_schedule(c, args, runlocal_seq_len=32)
    c.lock()
    return c
