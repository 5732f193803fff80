"""Preemption: a SIGTERM (SLURM's `--signal` notice, a TPU maintenance event, `kill`) makes
every process of the run agree on one step, save a checkpoint there and exit with
EXIT_PREEMPTED (75, EX_TEMPFAIL), which the launchers requeue on.

The stop step is the step after the notice: one process stops at the first step it completes
after the signal; several processes (jax.distributed) stop at S + 1, S the largest step any of
them had completed when the notice reached it, a step every process can still reach. A notice
is never lost: `listen()` (tlx.train's CLI calls it before anything else) records a SIGTERM that
arrives during setup (compile, restore, data checks), and the run then stops after its first
step. Before `listen()` (Python imports) SIGTERM still kills the process (status 143); nothing
had been trained. After the loop (final evaluation, final save) a notice is recorded and
ignored under the CLI: the run finishes and exits 0.

Several processes agree over jax.distributed's key-value store, not JAX's preemption sync
manager (`multihost_utils.reached_preemption_sync_point`), which loses a notice that arrives
before the loop of a resumed run: its C++ counter starts at 0, so it picks step 1, which a run
resumed at step N never reaches, and the run trains on until it is killed. It also lets a
background call (Orbax's save finalizer) move the counter back. `listen()` turns JAX's service
off (`jax_enable_preemption_service`) so that SIGTERM stays with Python.

The protocol, per process: the SIGTERM handler sets an event; a thread announces it under
`tlx/preemption/<run>/notice` and watches that key for anyone's notice (the thread starts with
the loop); on one, holding the lock that `reached()` takes, it posts the last step its loop
completed and reads every process's; the stop step is their max + 1. Only background threads
post and read, so a process blocked in a collective (its main thread) never keeps another from
agreeing; a main thread waits in `reached()` only while its own process agrees, and the one
that got the signal waits for the agreement at its next `reached()`, so the stop step is the
one after it wherever the others are. A process leaving its loop (end of the
run, an error) posts its last step too, so one still training never waits on it forever.
"""

import itertools
import signal
import sys
import threading

import jax

_NOTICE = threading.Event()  # a SIGTERM arrived (since listen() or the Watch's start)
_RUNS = itertools.count()  # Watches in this process: the same sequence on every process
TIMEOUT_S = 300  # how long agreement waits for a process to post its step
_POLL_MS = 500


def _notice(signum, frame) -> None:
    del frame
    if not _NOTICE.is_set():
        print(
            f"received {signal.Signals(signum).name}: saving a checkpoint at the next step "
            "every process can reach",
            file=sys.stderr,
            flush=True,
        )
    _NOTICE.set()


def listen(signum: int = signal.SIGTERM) -> None:
    """From now on `signum` is a preemption notice, recorded for the next Watch; call it at the
    start of a process, before `jax.distributed.initialize` (whose C++ notifier would take
    SIGTERM otherwise)."""
    jax.config.update("jax_enable_preemption_service", False)
    signal.signal(signum, _notice)


def _client():
    from jax._src import distributed  # the coordination service's key-value client

    return distributed.global_state.client


class Watch:
    """`with Watch(start_step) as w: ... if w.reached(step): save and stop` (the module doc).

    `reached(step)` must be called after every step on every process, with the step just done."""

    def __init__(self, start_step: int, signum: int = signal.SIGTERM):
        self._signum = signum
        self._step = start_step  # the last step this process's loop completed
        self._stop: int | None = None
        self._lock = threading.Lock()  # held by agreement: the loop cannot pass its posted step
        self._posted = False
        self._post_lock = threading.Lock()
        self._closing = threading.Event()
        self._agreed = threading.Event()  # the stop step is chosen (or agreement failed)
        self._previous = None
        self._thread = None
        self._prefix = ""

    def __enter__(self) -> "Watch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self._signum, _notice)
        if jax.process_count() > 1:
            self._prefix = f"tlx/preemption/{next(_RUNS)}/"
            self._thread = threading.Thread(target=self._agree, name="preemption", daemon=True)
            self._thread.start()
            self._wait_if_noticed()  # a notice from setup: stop after the first step
        return self

    def reached(self, step: int) -> bool:
        """Whether the run stops (and saves) at `step`; the same answer on every process."""
        with self._lock:
            self._step = step
            if self._thread is None and self._stop is None and _NOTICE.is_set():
                self._stop = step  # one process: the first step done after the notice
        if self._thread is not None:
            self._wait_if_noticed()
        return self._stop == step

    def _wait_if_noticed(self) -> None:
        """The process that got the signal waits for the agreement, which then has its
        current step: it stops one step later, wherever the others are."""
        if _NOTICE.is_set():
            self._agreed.wait(timeout=jax.process_count() * TIMEOUT_S + 10)

    # --- several processes -----------------------------------------------------------------
    def _post(self) -> None:
        with self._post_lock:
            if not self._posted:
                _client().key_value_set(
                    f"{self._prefix}step/{jax.process_index()}", str(self._step)
                )
                self._posted = True

    def _agree(self) -> None:
        try:
            self._agree_once()
        finally:
            self._agreed.set()

    def _agree_once(self) -> None:
        client, announced = _client(), False
        while not self._closing.is_set():  # wait for a notice: ours, or any process's
            if _NOTICE.is_set() and not announced:
                try:
                    client.key_value_set(f"{self._prefix}notice", str(jax.process_index()))
                except jax.errors.JaxRuntimeError:  # ALREADY_EXISTS: another process told first
                    pass
                announced = True
            try:
                source = client.blocking_key_value_get(f"{self._prefix}notice", _POLL_MS)
                break
            except jax.errors.JaxRuntimeError:  # DEADLINE_EXCEEDED: no notice yet
                continue
        else:
            return
        with self._lock:
            self._post()
            steps = []
            for i in range(jax.process_count()):
                try:
                    steps.append(int(client.blocking_key_value_get(f"{self._prefix}step/{i}",
                                                                   TIMEOUT_S * 1000)))  # fmt: skip
                except jax.errors.JaxRuntimeError as e:
                    print(f"preemption: process {i} posted no step ({e}); not stopping",
                          file=sys.stderr, flush=True)  # fmt: skip
                    return
            self._stop = max(steps) + 1
        print(
            f"preemption notice (from process {source}): every process stops at step {self._stop}",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._closing.set()
            try:
                self._post()  # a process still training may be waiting for our step
            except jax.errors.JaxRuntimeError as e:  # the service is gone: nobody waits
                print(f"preemption: could not post the last step: {e}", file=sys.stderr)
            self._thread.join(timeout=2 * _POLL_MS / 1000)
        if self._stop is not None:
            _NOTICE.clear()  # consumed: this run chose its stop step by it
        if self._previous is not None:
            signal.signal(self._signum, self._previous)
            self._previous = None
