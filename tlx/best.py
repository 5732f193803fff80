"""The best checkpoint of a run: the params of its best evaluation of `c.best_metric`
(NAME/METRIC of one of its evaluators, `c.best_mode` max or min) in `WORKDIR/best`, with their
metrics in its meta and in `WORKDIR/best_metrics.json`. Kept by tlx.train for any run; read by
tlx.evaluate / tlx.generate (`--checkpoint=best`)."""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from tlx import evaluators
from tlx.checkpoint import BEST_DIR, _describe, _report
from tlx.digests import tree_digests
from tlx.errors import ConfigError


def best_manager(workdir: str) -> ocp.CheckpointManager:
    """`workdir/best`: the params (and metrics) of the best dev evaluation so far, one kept."""
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, BEST_DIR)),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        item_handlers={
            "params": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )


def best_so_far(mngr: ocp.CheckpointManager) -> dict | None:
    """The meta ({'step', 'metric', 'value', 'metrics'}) of the kept best checkpoint, if any.
    A damaged meta is reported and treated as no best so far (the next evaluation replaces it)."""
    step = mngr.latest_step()
    if step is None:
        return None
    try:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001
        _report(f"best checkpoint {mngr.directory}/{step}: meta unreadable ({_describe(e)})")
        return None


def save_best(mngr: ocp.CheckpointManager, step: int, params, meta: dict) -> None:
    meta = {**meta, "digests": tree_digests({"params": params})}
    mngr.save(
        step,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    mngr.wait_until_finished()


class BestTracker:
    """Keeps the params of the best evaluation of `c.best_metric` (NAME/METRIC of one of the
    run's evaluators; `c.best_mode` max or min) in `workdir/best`, its metrics beside them."""

    def __init__(self, workdir: str, cfg: ml_collections.ConfigDict):
        self.metric, self.mode = evaluators.best(cfg)
        self.source, _, self.key = self.metric.partition("/")
        self.mngr = best_manager(workdir) if self.metric else None
        self.best = _fractions(best_so_far(self.mngr)) if self.mngr else None
        self.workdir = workdir

    def update(self, step: int, params, results: dict[str, dict[str, float]]) -> None:
        if self.mngr is None:
            return
        if self.key not in results.get(self.source, {}):
            raise ConfigError(
                f"best_metric={self.metric!r} is not a metric of the run's evaluators: "
                + ", ".join(f"{n}/{k}" for n, r in results.items() for k in r)
            )
        value = results[self.source][self.key]
        if self.best is not None:
            before = self.best["value"]
            if not (value > before if self.mode == "max" else value < before):
                return
        self.best = {
            "step": step,
            "metric": self.metric,
            "mode": self.mode,
            "value": value,
            "metrics": results[self.source],
            "units": "fraction",
        }
        save_best(self.mngr, step, params, self.best)
        if jax.process_index() == 0:
            with open(os.path.join(self.workdir, "best_metrics.json"), "w") as f:
                json.dump(self.best, f, indent=2)

    def close(self) -> None:
        if self.mngr is not None:
            self.mngr.close()


def _fractions(meta: dict | None) -> dict | None:
    """A best checkpoint's meta from before metrics were fractions (no "units": only downstream
    runs kept one, their task metrics in percent), in today's units and metric names."""
    if meta is None or "units" in meta:
        return meta
    keep = lambda k: k.endswith("loss") or k == "num_examples"  # noqa: E731
    return {
        **meta,
        "metric": f"eval/{meta['metric']}",
        "value": meta["value"] / 100.0,
        "metrics": {k: v if keep(k) else v / 100.0 for k, v in meta["metrics"].items()},
        "units": "fraction",
    }
