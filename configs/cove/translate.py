r"""CoVe pretraining: an attentional LSTM encoder-decoder translating Multi30k English -> German.

  python -m tlx.train --config=configs/cove/translate.py:size=small --workdir=runs/cove
  python -m tlx.translate --workdir=runs/cove --split=test --beam=5     # BLEU, test_2016_flickr

The encoder is a 2-layer BiLSTM over frozen GloVe (McCann et al. 2017's MT-LSTM); its top
layer is CoVe, which configs/cove/finetune.py feeds to downstream tasks next to GloVe. The
decoder is a 2-layer LSTM with attention and input feeding. Source words use the GloVe 6B
vocabulary (`words:glove6b`, the same ids as the downstream tasks'); target words are the
lower-cased German words and punctuation of the training split seen twice or more (7,883).

Arguments: size = small (GloVe 6B 50d, 128 units per encoder direction, decoder 256, target
embeddings 128; what a 2-core CPU trains in minutes) | full (the paper's widths: 300 per
direction, decoder 600, target embeddings 300; the paper's GloVe is 840B 300d, tlx ships the
6B 50d import, so `full` still reads 50-d vectors unless transfer.init_vectors names a 300-d
file); epochs (default 2); runlocal (tests).
Optimizer: Adam 1e-3 with linear decay, clipping 5 (Luong et al. 2015 clip at 5), dropout 0.2.
Expected: see README's CoVe section (small, 2 CPU cores).
"""

from configs import common

SIZES = {
    "small": dict(hidden=128, decoder_hidden=256, tgt_embed_dim=128),
    "full": dict(hidden=300, decoder_hidden=600, tgt_embed_dim=300),
}


def get_config(arg=None):
    args = common.parse_arg(arg, size="small", epochs=2.0, batch=64, lr=1e-3, runlocal=False)
    if args.size not in SIZES:
        raise KeyError(f"size must be one of {sorted(SIZES)}, got {args.size!r}")
    c = common.base_config()
    c.model = dict(
        name="cove_mt",
        vocab_size=None,  # the source vocabulary's (tlx.train fills it in)
        tgt_vocab_size=None,  # the task's target vocabulary's
        embed_dim=common.GLOVE6B_DIM,
        num_layers=2,
        decoder_layers=2,
        dropout_rate=0.2,
        freeze_embed=True,
        unroll=1,
        dtype="float32",  # compute: float32 | bfloat16 (tlx.precision)
        param_dtype="float32",  # master weights
        remat="none",  # per LSTM step: none | full | dots | save_proj | ... (tlx.precision)
        **SIZES[args.size],
    )
    c.objective.name = "seq2seq"
    c.data.task = "multi30k_en_de"
    c.data.vocab = "words:glove6b"
    # Source and target length: 0.16% of training targets (German words, punctuation, EOS) are
    # longer and keep their first 31 tokens; tlx.translate decodes up to 48.
    c.data.seq_len = 32
    c.transfer.init_vectors = "glove6b"
    c.transfer.vectors_param = "cove/embed/embedding"
    c.optim.frozen = ["cove/embed/.*"]
    c.optim.lr = args.lr
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 5.0
    common.epochs_schedule(c, args.epochs, args.batch)
    c.checkpoint.every = 200
    c.checkpoint.max_to_keep = 2
    # Greedy BLEU on the dev sentences once the run ends (tlx.translate: beam search, any split).
    c.evals.bleu = dict(type="bleu", split="validation", beam=1, when="end")
    if args.runlocal:
        c.evals.bleu.limit = 16
        c.model.hidden, c.model.decoder_hidden, c.model.tgt_embed_dim = 8, 16, 8
        c.data.seq_len = 16
        common.runlocal(c, steps=4, every=4, log_every=2, eval_steps=2)
    c.lock()
    return c
