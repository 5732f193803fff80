"""The pretraining objective can actually learn: BERT-tiny memorises one fixed batch."""

import jax
import numpy as np

from configs.bert import pretrain
from tlx import steps


def test_mlm_and_nsp_memorise_a_fixed_batch(fake_bert_batches):
    cfg = pretrain.get_config("size=tiny,runlocal")
    cfg.unlock()
    cfg.mesh.data = 1
    cfg.model.vocab_size = 1000
    cfg.model.dropout_rate = cfg.model.attention_dropout_rate = 0.0
    cfg.optim.lr, cfg.optim.warmup_fraction, cfg.train.steps = 3e-3, 0.0, 10_000
    batch = fake_bert_batches(n=1, b=8, length=32, p=5, vocab=1000)[0]
    setup = steps.build(cfg, batch, devices=jax.devices()[:1])
    state = setup.init(jax.random.PRNGKey(0))
    device_batch = jax.device_put(batch, setup.batch_sharding)
    first = None
    for _ in range(150):
        state, metrics = setup.train_step(state, device_batch)
        first = first if first is not None else float(metrics["loss"][0])
    mlm_acc = float(metrics["mlm_accuracy"][0] / metrics["mlm_accuracy"][1])
    nsp_acc = float(metrics["nsp_accuracy"][0] / metrics["nsp_accuracy"][1])
    assert first > 6.0  # ~ln(1000) + ln(2) at init
    assert float(metrics["loss"][0]) < 0.5, float(metrics["loss"][0])
    assert mlm_acc > 0.9 and nsp_acc == 1.0, (mlm_acc, nsp_acc)
    assert np.isfinite(float(metrics["grad_norm"]))
