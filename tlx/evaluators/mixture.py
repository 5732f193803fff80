"""A mixture scored member by member: MEMBER/METRIC for each, `loss` (mean of the members')
and `average` (mean of the members' primary metrics, GLUE-style)."""

import numpy as np

import data_pipelines
from tlx.evaluators import base, downstream


class Mixture(base.Evaluator):
    def __init__(self, name, setup, cfg, **options):
        super().__init__(name, setup, cfg, **options)
        members = data_pipelines.tasks.mixture_members(self.cfg.data.task_name)
        if members is None:
            raise base.ConfigError(
                f"evals.{name} (mixture) needs a mixture task; {self.cfg.data.task!r} is not one"
            )
        options = {k: v for k, v in options.items() if k != "task"}
        self.members = [
            (base_name, downstream.Downstream(name, setup, self.cfg, task_name=member, **options))
            for member, base_name in members
        ]

    def run(self, params) -> dict[str, float]:
        out, primaries, losses = {}, [], []
        for base_name, member in self.members:
            metrics = member.run(params)
            out.update({f"{base_name}/{k}": v for k, v in metrics.items()})
            primaries.append(metrics[member.info.primary_metric])
            losses.append(metrics["loss"])
        return {"loss": float(np.mean(losses)), "average": float(np.mean(primaries)), **out}
