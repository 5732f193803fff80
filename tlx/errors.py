"""What a user did wrong, told as such: the error types of bad input and the CLIs' boundary.

Every CLI (`tlx.train`, `tlx.evaluate`, `tlx.convert`, `tlx.generate`, `tlx.translate`,
`tlx.data`, `tlx.word_eval`) runs its main through `cli_boundary`, which turns these errors into
one `error: ...` paragraph on stderr and an exit status, instead of a traceback:

  0  success
  1  a crash: a bug in tlx or a library (the traceback is printed)
  2  bad input: a config key or value, a flag, a data file, a checkpoint, a pretrained source;
     the message names the culprit (key, file:line, step directory, parameter)
  3  training diverged (NaN/inf loss); nothing was saved after the last good checkpoint
 75  preempted (SIGTERM): every process saved a checkpoint at one step; run the same command
     again to resume (EX_TEMPFAIL; launch/slurm.sbatch and launch/tpu_pod.sh requeue on it)

Messages of status 2 are written for the person who typed the command: what is wrong, where,
and what to do about it.
"""

import sys
from collections.abc import Callable

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75


class UserError(Exception):
    """Bad input to tlx (not a bug); the message names the culprit."""


class ConfigError(UserError, ValueError):
    """A config key or value that cannot work; the message names the key."""


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged or does not fit; the message names the directory."""


class TransferError(UserError, ValueError):
    """A pretrained checkpoint does not fit the model; the message names the parameter."""


class DivergedError(FloatingPointError):
    """A non-finite loss; the message names the step and the last good checkpoint."""


class Preempted(Exception):
    """The run was told to stop (SIGTERM) and saved a checkpoint at `step` (tlx.preemption)."""

    def __init__(self, step: int):
        super().__init__(f"preempted at step {step}; checkpoint saved")
        self.step = step


# Bad input raised by tlx or by the standard library when a named path is missing; the data
# layer's DataError is added in exit_status (importing data_pipelines loads TensorFlow, which
# light CLIs such as `tlx.data list` avoid).
BAD_INPUT = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def exit_status(error: BaseException) -> int | None:
    """The documented exit status of an error, or None for a crash (print the traceback)."""
    if isinstance(error, Preempted):
        return EXIT_PREEMPTED
    if isinstance(error, FloatingPointError):
        return EXIT_DIVERGED
    if isinstance(error, BAD_INPUT):
        return EXIT_BAD_INPUT
    data_errors = sys.modules.get("data_pipelines.errors")  # loaded by whoever raised one
    if data_errors is not None and isinstance(error, data_errors.DataError):
        return EXIT_BAD_INPUT
    return None


def cli_boundary(main: Callable) -> Callable:
    """Wraps a CLI's main: a known error becomes `error: MESSAGE` on stderr and its exit
    status (SystemExit); anything else propagates with its traceback."""

    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised below unless it is a known kind
            status = exit_status(e)
            if status is None:
                raise
            if not isinstance(e, Preempted):  # the loop has said so on stdout: not a failure
                print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(status) from e

    return guarded
