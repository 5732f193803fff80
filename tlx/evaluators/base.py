"""The evaluator interface and the options every evaluator shares."""

import ml_collections

from tlx import steps as steps_lib
from tlx.errors import ConfigError

__all__ = ["ConfigError", "Evaluator"]

WHEN = ("eval", "end")


class Evaluator:
    """`run(params) -> {metric: float}`, called on every process (it may run collectives).

    Subclasses jit their functions in __init__ (once per run) and read batches of
    `self.cfg`: the run's config with this evaluator's task, split and step count applied."""

    reads_split = True  # False: scores no task split (word vectors, exports)
    shown: tuple[str, ...] = ()  # nested metrics the progress line shows too (tlx.metrics)

    def __init__(
        self,
        name: str,
        setup: steps_lib.Setup,
        cfg: ml_collections.ConfigDict,
        *,
        workdir: str,
        split: str | None = None,
        task: str | None = None,
        steps: int | None = None,
        when: str = "eval",
    ):
        if when not in WHEN:
            raise ConfigError(f"evals.{name}.when={when!r}: expected one of {WHEN}")
        self.name, self.setup, self.workdir, self.when = name, setup, workdir, when
        self.split = split or cfg.data.eval_split
        self.cfg = ml_collections.ConfigDict(cfg.to_dict())
        if steps is not None:
            self.cfg.train.eval_steps = steps
        if task and task != cfg.data.task:
            self.cfg.data.task = task
            self.cfg.data.task_name = steps_lib.resolve_task(self.cfg)

    @classmethod
    def splits(cls, cfg, spec: dict) -> tuple[str, ...]:
        """The splits of the run's task this evaluator reads (checked before training)."""
        if not cls.reads_split or spec.get("task", cfg.data.task) != cfg.data.task:
            return ()
        return (spec.get("split") or cfg.data.eval_split,)

    def run(self, params) -> dict[str, float]:
        raise NotImplementedError
