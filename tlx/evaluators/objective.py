"""The training objective's loss and metrics over a split (pretraining runs' evaluation)."""

from tlx import input_pipeline, partitioning
from tlx.evaluators import base
from tlx.metrics import reduce


class Objective(base.Evaluator):
    def __init__(self, name, setup, cfg, **options):
        super().__init__(name, setup, cfg, **options)
        self._step = setup.eval_step

    def run(self, params) -> dict[str, float]:
        batches, n = input_pipeline.eval_batches(self.cfg, self.cfg.train.batch_size, self.split)
        window = [
            self._step(params, partitioning.global_batch(local, self.setup.batch_sharding))
            for _, local in zip(range(n), batches, strict=False)
        ]
        return reduce(window)
