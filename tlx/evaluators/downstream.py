"""A downstream task's own metrics (its seqio metric_fn: accuracy, F1, span F1 with seqeval
semantics, as fractions), computed on the host from the gathered argmax predictions, with the
objective's loss alongside."""

import jax
import jax.numpy as jnp
import numpy as np

import data_pipelines
from data_pipelines import tagging
from tlx import input_pipeline, partitioning
from tlx.evaluators import base
from tlx.metrics import reduce

# Batch fields the host needs to score predictions, per task kind.
TARGETS = {
    "sentence": ("label",),
    "pair": ("label",),
    "tagging": ("label_weights", "word_labels"),
}


def make_predict_step(model, objective, kind: str):
    """(params, batch) -> the objective's metrics, argmax predictions and the targets needed to
    score them (global), from one forward pass."""

    def predict(params, batch):
        outputs, _ = model.apply({"params": params}, batch, train=False)
        out = {k: batch[k] for k in (*TARGETS[kind], "example_weight")}
        out["prediction"] = jnp.argmax(outputs["logits"], -1).astype(jnp.int32)
        out["metrics"] = objective(outputs, batch)[1]
        return out

    return predict


def task_metrics(info, collected: list[dict]) -> dict[str, float]:
    """The task's metric_fn over gathered prediction batches (padding examples dropped)."""
    batch = {k: np.concatenate([c[k] for c in collected]) for k in collected[0]}
    keep = batch["example_weight"] > 0
    if info.kind in ("sentence", "pair"):
        return info.metric_fn(batch["label"][keep].tolist(), batch["prediction"][keep].tolist())
    names = info.labels
    targets, predictions = [], []
    for pred, weights, words in zip(
        batch["prediction"][keep], batch["label_weights"][keep], batch["word_labels"][keep]
    ):
        gold, guess = tagging.words_from_pieces(pred, weights, words, tagging.outside_id(names))
        targets.append([names[i] for i in gold])
        predictions.append([names[i] for i in guess])
    return info.metric_fn(targets, predictions)


class Downstream(base.Evaluator):
    """{loss, the task's metrics, num_examples} on the split. `task_name`: a registered task
    (a mixture member) instead of the run's task."""

    def __init__(self, name, setup, cfg, *, task_name: str | None = None, **options):
        super().__init__(name, setup, cfg, **options)
        if task_name is not None:
            self.cfg.data.task_name = task_name
        try:
            self.info = data_pipelines.downstream_info(self.cfg.data.task_name)
        except ValueError as e:
            raise base.ConfigError(f"evals.{name} (downstream) needs a downstream task; {e}") from e
        self._predict = setup.jit_eval(
            make_predict_step(setup.model, setup.objective, self.info.kind)
        )

    def run(self, params) -> dict[str, float]:
        batches, n = input_pipeline.eval_batches(self.cfg, self.cfg.train.batch_size, self.split)
        window, collected = [], []
        for _, local in zip(range(n), batches, strict=False):
            batch = partitioning.global_batch(local, self.setup.batch_sharding)
            out = jax.device_get(self._predict(params, batch))
            window.append(out.pop("metrics"))
            collected.append(out)
        loss = reduce(window)["loss"]
        count = int(sum(float(c["example_weight"].sum()) for c in collected))
        return {"loss": loss, **task_metrics(self.info, collected), "num_examples": count}
