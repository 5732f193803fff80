"""Joining JAX's multi-controller runtime (`jax.distributed`): when, and with which arguments.

`initialize(cfg)` runs first in `tlx.train`, before anything touches a device. It joins when

  1. TLX_COORDINATOR / TLX_NUM_PROCESSES / TLX_PROCESS_ID are set (launch/multiprocess.sh):
     those addresses, cluster detection off;
  2. `distributed.join="always"` (or the legacy top-level `multihost=True`):
     `jax.distributed.initialize()` with JAX's cluster detection (TPU pods, SLURM, Open MPI);
  3. `distributed.join="auto"` (the default) inside a SLURM step of more than one task
     (`srun`, launch/slurm.sbatch): JAX's SlurmCluster reads SLURM_JOB_ID, SLURM_NTASKS,
     SLURM_PROCID, SLURM_LOCALID and SLURM_STEP_NODELIST; process 0's node is the coordinator.
     A single-task job or step (`salloc` then `pytest`, `sbatch -n1`) stays one process, and
     so does a process the batch script starts without `srun` (SLURM sets no
     SLURM_STEP_NODELIST there; SLURM_STEP_NUM_TASKS, where set, wins over SLURM_NTASKS).

Otherwise (`join="never"`, or no launcher) the run is one process. The `c.distributed` keys:

  join                    "auto" | "always" | "never"
  cluster_detection       "auto" (JAX picks) | "slurm" | "gcetpu" | "gketpu" | "ompi" | "mpi4py"
                          | "deactivate" (no detection: JAX_COORDINATOR_ADDRESS and the
                          explicit arguments only; also turns the SLURM rule of `auto` off)
  local_device_ids        "" (JAX's default: one GPU per process, SLURM_LOCALID's)
                          | "all" (one process per node driving every GPU it sees; counted from
                          CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE, without starting a backend)
                          | "0,1,2,3" (these local GPU ordinals)
  initialization_timeout  seconds to wait for every process to join
  heartbeat_timeout       seconds after which a silent process counts as lost (the job fails)

JAX's own environment variables still apply: JAX_COORDINATOR_PORT (the SLURM default is derived
from the job id), JAX_COORDINATOR_ADDRESS (host:port, skips detection of the address),
JAX_COORDINATOR_BIND_ADDRESS, JAX_LOCAL_DEVICE_IDS.
"""

import os
from collections.abc import Mapping

import jax
import ml_collections

from tlx.errors import ConfigError

JOIN = ("auto", "always", "never")
# jax._src.clusters' names; "auto" passes None (JAX tries each environment in turn).
CLUSTER_DETECTION = ("auto", "slurm", "gcetpu", "gketpu", "ompi", "mpi4py", "deactivate")
# The variables jax's SlurmCluster needs (jax/_src/clusters/slurm_cluster.py).
SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
DEFAULTS = {
    "join": "auto",
    "cluster_detection": "auto",
    "local_device_ids": "",
    "initialization_timeout": 300,
    "heartbeat_timeout": 100,
}


def _settings(cfg: ml_collections.ConfigDict) -> dict:
    """The distributed.* values (defaults for a config without the block), checked."""
    out = dict(DEFAULTS)
    out.update(dict(cfg.get("distributed") or {}))
    if cfg.get("multihost", False):  # legacy top-level key
        out["join"] = "always"
    for key, allowed in (("join", JOIN), ("cluster_detection", CLUSTER_DETECTION)):
        if out[key] not in allowed:
            raise ConfigError(f"distributed.{key}={out[key]!r}: must be one of {list(allowed)}")
    for key in ("initialization_timeout", "heartbeat_timeout"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"distributed.{key}={value!r}: must be a positive number of seconds")
    ids = out["local_device_ids"]
    ok = isinstance(ids, str) and (
        ids in ("", "all") or all(p.strip().isdigit() for p in ids.split(","))
    )
    if not ok:
        raise ConfigError(
            f"distributed.local_device_ids={ids!r}: must be '' (JAX's default: one GPU per "
            "process), 'all' (every GPU of the node) or a list of GPU ordinals like '0,1,2,3'"
        )
    return out


def local_gpu_count(environ: Mapping[str, str]) -> int | None:
    """The GPUs this process may use, from the environment alone (no backend is started)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible != "NoDevFiles":
        return len([d for d in visible.split(",") if d.strip()])
    on_node = environ.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit():
        return int(on_node)
    return None


def _local_device_ids(ids: str, environ: Mapping[str, str]) -> list[int] | None:
    if ids == "":
        return None
    if ids == "all":
        count = local_gpu_count(environ)
        if not count:
            raise ConfigError(
                "distributed.local_device_ids='all' needs the node's GPU count, but neither "
                "CUDA_VISIBLE_DEVICES nor SLURM_GPUS_ON_NODE is set; list the GPUs instead, "
                "e.g. --config.distributed.local_device_ids=0,1,2,3"
            )
        return list(range(count))
    return [int(p) for p in ids.split(",")]


def slurm_tasks(environ: Mapping[str, str]) -> int:
    """The tasks of the SLURM step this process belongs to; 0 outside an `srun` step JAX can
    join (a variable it reads is missing)."""
    if not all(v in environ for v in SLURM_VARS):
        return 0
    count = environ.get("SLURM_STEP_NUM_TASKS") or environ["SLURM_NTASKS"]
    try:
        return int(count)
    except ValueError as e:
        raise ConfigError(f"SLURM_NTASKS={count!r} is not a task count") from e


def _env_int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except KeyError as e:
        raise ConfigError(f"TLX_NUM_PROCESSES is set but {name} is not") from e
    except ValueError as e:
        raise ConfigError(f"{name}={environ[name]!r}: must be an integer") from e


def plan(cfg: ml_collections.ConfigDict, environ: Mapping[str, str]) -> tuple[dict, str] | None:
    """The keyword arguments of `jax.distributed.initialize` and why, or None: one process."""
    s = _settings(cfg)
    method = None if s["cluster_detection"] == "auto" else s["cluster_detection"]
    if s["join"] == "never":
        return None
    if "TLX_NUM_PROCESSES" in environ:
        if "TLX_COORDINATOR" not in environ:
            raise ConfigError("TLX_NUM_PROCESSES is set but TLX_COORDINATOR is not")
        kwargs = {
            "coordinator_address": environ["TLX_COORDINATOR"],
            "num_processes": _env_int(environ, "TLX_NUM_PROCESSES"),
            "process_id": _env_int(environ, "TLX_PROCESS_ID"),
            "cluster_detection_method": "deactivate",
        }
        reason = "TLX_NUM_PROCESSES (launch/multiprocess.sh)"
    elif s["join"] == "always":
        kwargs, reason = {"cluster_detection_method": method}, "distributed.join='always'"
    elif method in (None, "slurm") and (tasks := slurm_tasks(environ)) > 1:
        kwargs = {"cluster_detection_method": "slurm"}
        reason = f"a SLURM step of {tasks} tasks (job {environ['SLURM_JOB_ID']})"
    else:
        return None
    kwargs["initialization_timeout"] = s["initialization_timeout"]
    kwargs["heartbeat_timeout_seconds"] = s["heartbeat_timeout"]
    ids = _local_device_ids(s["local_device_ids"], environ)
    if ids is not None:
        kwargs["local_device_ids"] = ids
    return kwargs, reason


def initialize(cfg: ml_collections.ConfigDict, environ: Mapping[str, str] | None = None) -> None:
    """Joins the multi-process job this process was launched into, if any (module doc)."""
    if jax.distributed.is_initialized():
        return
    decided = plan(cfg, os.environ if environ is None else environ)
    if decided is None:
        return
    kwargs, reason = decided
    # Cross-process collectives on the CPU platform (multiprocess.sh, tests); JAX's current
    # default, set explicitly since older and newer releases differ. GPU/TPU ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    print(f"distributed: {reason}: jax.distributed.initialize({shown})", flush=True)
    jax.distributed.initialize(**kwargs)
