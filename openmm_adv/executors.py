"""Where oracle labelling runs: in this process, in a local process pool, or on a Dask cluster.

A *labeller* runs one task per structure and hands each label to a callback in the calling
process as soon as it is back, so the caller can save it at once (the loop writes one file per
structure): a run killed midway keeps every label it finished. Two faults of real oracles are
handled here, for every oracle alike:

- a worker process that dies (a segfault in a quantum-chemistry code, a node lost from a batch
  job) has the structures it was running resubmitted, up to ``retries`` times each; each
  structure is still handed over exactly once;
- a structure that takes longer than ``timeout`` seconds (an SCF that never ends, a hung
  external program) is recorded as failed, reason ``"timeout after N s"``, and its worker
  process is killed and replaced: a C call that hangs cannot be interrupted inside its own
  process.

Labellers: :class:`InProcessLabeller` (one structure after another, here; no timeout),
:class:`ProcessLabeller` (a ``spawn`` process pool, the default for more than one worker or a
timeout), :class:`DaskLabeller` (a ``dask.distributed`` cluster: a ``LocalCluster``, a running
scheduler, or SLURM, PBS, SGE, LSF, HTCondor, Moab and OAR through dask-jobqueue; ``pip
install 'openmm-adv[dask]'``). :func:`make_labeller` builds one from an ``oracle`` config
section; :func:`start_dask` starts (or connects to) a cluster, for labelling and for the
independent loops of ``openmm-adv compare``.
"""

from __future__ import annotations

import abc
import hashlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
import uuid
import warnings
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

import numpy as np

from ._errors import first_line

__all__ = [
    "DASK_CLUSTERS",
    "DaskLabeller",
    "InProcessLabeller",
    "Labeller",
    "ProcessLabeller",
    "make_labeller",
    "start_dask",
    "timeout_reason",
]

#: Batch systems reached through dask-jobqueue, by the name a config gives them.
JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}
#: Every value of ``executor.cluster``: a LocalCluster, a running scheduler, or a batch system.
DASK_CLUSTERS = ("local", "address", *JOBQUEUE_CLUSTERS)

#: Oracles pickled to at most this many bytes travel inside each Dask task.
_INLINE_ORACLE_BYTES = 1 << 20
#: Called with (structure index, its one-structure Labels, seconds the oracle took).
OnLabel = Callable[[int, "object", float], None]


def timeout_reason(timeout: float) -> str:
    """The failure reason recorded for a structure that ran over ``timeout`` seconds."""
    return f"timeout after {timeout:g} s"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


def _failed(oracle, reason: str):
    from .oracles.base import Labels

    return Labels.failed(1, oracle.n_atoms, reason, oracle.name)


def _compute(oracle, positions: np.ndarray):
    """The oracle's labels of one structure ``[1, N, 3]``. :class:`~openmm_adv.oracles.base.Oracle`
    records its own failures; an oracle of another kind that raises gets failed labels with the
    exception as their reason, since one structure never stops a run."""
    try:
        return oracle.compute(positions)
    except Exception as exc:
        from .oracles.base import Labels

        return Labels.failed(len(positions), positions.shape[1], f"oracle raised {_reason(exc)}",
                             getattr(oracle, "name", type(oracle).__name__))


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    timeout = float(timeout)
    if not (np.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds per structure (or None), got {timeout}")
    return timeout


class Labeller(abc.ABC):
    """Labels structures one task each and hands every label back as it completes.

    A labeller may hold resources (a process pool, a Dask client and cluster): use it as a
    context manager, or call :meth:`close`. One labeller can serve many :meth:`run` calls
    (the loop's generations).

    Attributes
    ----------
    timeout : float or None
        Seconds one structure may take before it is recorded as failed
        (:func:`timeout_reason`) and its worker is killed; None: no limit.
    """

    timeout: float | None = None

    @abc.abstractmethod
    def run(self, oracle, positions: np.ndarray, on_label: OnLabel, indices: Sequence[int] | None = None) -> None:
        """Label ``positions[i]`` for every ``i`` in ``indices`` (default: all).

        Parameters
        ----------
        oracle : openmm_adv.oracles.Oracle
        positions : numpy.ndarray
            ``[B, N, 3]`` in nm.
        on_label : callable
            ``on_label(i, labels, seconds)``, called in this process, in this thread, exactly
            once per index, in completion order; ``labels`` holds that one structure
            (failed, with its reason, when the oracle failed, the worker died more than
            ``retries`` times or the structure ran over ``timeout``).
        indices : sequence of int, optional
        """

    def check(self, oracle) -> None:
        """Raise ValueError now if ``oracle`` cannot be labelled here (e.g. cannot be pickled
        for worker processes), rather than when the first labels are due."""

    def describe(self) -> str:
        """Where the labels are computed, for log lines."""
        return type(self).__name__

    def close(self) -> None:
        """Release the workers (a no-op for labellers that hold none)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessLabeller(Labeller):
    """One structure after another in this process (no timeout: a hang cannot be interrupted here)."""

    def run(self, oracle, positions, on_label, indices=None):
        positions = np.asarray(positions, dtype=np.float64)
        for i in range(len(positions)) if indices is None else indices:
            start = time.perf_counter()
            labels = _compute(oracle, positions[i][None])
            on_label(int(i), labels, time.perf_counter() - start)

    def describe(self) -> str:
        return "this process"


# ---------------------------------------------------------------------------- worker side
_STARTED = None  # in a process-pool worker: the queue it announces each task's start on
_WORKER_ORACLES = threading.local()  # per thread: (token, oracle) of the last oracle unpacked
_PREPARED = False


def _init_process_worker(threads: int, started) -> None:
    """Initializer of a :class:`ProcessLabeller` worker."""
    from .oracles.base import _init_worker

    global _STARTED, _PREPARED
    _init_worker(threads)
    _STARTED, _PREPARED = started, True


def _announce_start(index: int, topic: str | None) -> None:
    """Tell the labeller this task starts now, and where, so it can time it and kill the
    right process."""
    if _STARTED is not None:
        _STARTED.put((index, os.getpid()))
    elif topic is not None:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(topic, {"index": int(index), "worker": worker.address})


def _worker_oracle(blob: bytes, token: str, threads: int):
    """The oracle of ``blob``, unpacked once per worker thread: its lazily built engine (an
    OpenMM Context, a tblite calculator) then serves every structure of that thread."""
    global _PREPARED
    if not _PREPARED:  # a Dask worker: limit OpenMP before an oracle loads its runtime
        from .oracles.base import _init_worker

        _init_worker(threads)
        _PREPARED = True
    cached = getattr(_WORKER_ORACLES, "entry", None)
    if cached is None or cached[0] != token:
        cached = (token, pickle.loads(blob))
        _WORKER_ORACLES.entry = cached
    return cached[1]


def _label_task(blob: bytes, token: str, index: int, positions: np.ndarray, topic: str | None, threads: int):
    """One structure's label, in a worker (module level so that pools can pickle it by name)."""
    _announce_start(index, topic)
    oracle = _worker_oracle(blob, token, threads)
    start = time.perf_counter()
    labels = _compute(oracle, positions[None])
    return index, labels, time.perf_counter() - start


def _identity(value):
    return value


def _pack(oracle, dumps=pickle.dumps) -> tuple[bytes, str]:
    try:
        blob = dumps(oracle)
    except Exception as exc:
        raise ValueError(
            f"oracle {getattr(oracle, 'name', oracle)!r} cannot be sent to worker processes ({_reason(exc)}); "
            "label in this process (workers: 1, no timeout), or define its functions at module level"
        ) from exc
    return blob, hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------------------- process pool
class ProcessLabeller(Labeller):
    """Label in a pool of ``workers`` spawned processes, with a per-structure timeout.

    Parameters
    ----------
    workers : int
        Processes (each uses ``oracle.threads`` OpenMP threads).
    timeout : float, optional
        Seconds per structure, counted from when a worker starts it. A structure that runs
        over is recorded as failed and its process killed; the pool is then rebuilt and the
        structures that were running beside it start again.
    retries : int
        Times a structure is resubmitted after its worker process died. A structure that was
        running when a worker died is a suspect: suspects then run alone, one at a time, so
        the one that kills its worker is told apart from its neighbours and is the only one
        that uses up its retries.

    Notes
    -----
    ``spawn``, not ``fork``: forking a process that holds OpenMM or CUDA state is unsafe. The
    pool lives for one :meth:`run` call, so idle workers hold no memory between a loop's
    labelling stages.
    """

    def __init__(self, workers: int = 1, timeout: float | None = None, retries: int = 2):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if int(retries) < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.workers = int(workers)
        self.timeout = _check_timeout(timeout)
        self.retries = int(retries)

    def describe(self) -> str:
        limit = f", timeout {self.timeout:g} s" if self.timeout else ""
        return f"{self.workers} worker process{'es' if self.workers > 1 else ''}{limit}"

    def check(self, oracle) -> None:
        _pack(oracle)
        if multiprocessing.current_process().daemon:
            raise ValueError(
                "labelling in worker processes (workers > 1 or a timeout) was asked for inside a daemonic process "
                "(a Dask worker?), which may not start processes: set the Dask config "
                "distributed.worker.daemon: false, or use oracle workers: 1 without a timeout"
            )

    def run(self, oracle, positions, on_label, indices=None):
        positions = np.asarray(positions, dtype=np.float64)
        todo = deque(int(i) for i in (range(len(positions)) if indices is None else indices))
        if not todo:
            return
        self.check(oracle)
        blob, token = _pack(oracle)
        attempts, suspects = Counter(), set()
        while todo:
            self._run_pool(oracle, blob, token, positions, todo, on_label, attempts, suspects)

    def _run_pool(self, oracle, blob, token, positions, todo: deque, on_label, attempts: Counter, suspects: set):
        """Work through ``todo`` in one pool until it is done or the pool broke (then the
        structures that were in flight are back in ``todo`` or recorded as failed)."""
        context = multiprocessing.get_context("spawn")
        started_queue = context.SimpleQueue()
        n = min(self.workers, len(todo))
        threads = getattr(oracle, "threads", 1)
        pool = ProcessPoolExecutor(n, mp_context=context, initializer=_init_process_worker,
                                   initargs=(threads, started_queue))
        in_flight: dict[Future, int] = {}
        started: dict[int, tuple[float, int]] = {}
        broken: BaseException | None = None
        killed = False  # we killed a hung worker: the pool breaks because of us, not the others
        poll = None if self.timeout is None else min(0.25, self.timeout / 4)
        try:
            while (todo or in_flight) and broken is None and not killed:
                # At most one task per worker, so a task starts as soon as it is submitted;
                # a suspect runs alone.
                while todo and len(in_flight) < n:
                    if (todo[0] in suspects and in_flight) or any(i in suspects for i in in_flight.values()):
                        break
                    index = todo.popleft()
                    try:
                        in_flight[pool.submit(_label_task, blob, token, index, positions[index], None, threads)] = index
                    except BrokenProcessPool as exc:
                        todo.appendleft(index)
                        broken = exc
                        break
                if broken is not None or not in_flight:
                    break
                done, _ = wait(in_flight, timeout=poll, return_when=FIRST_COMPLETED)
                while not started_queue.empty():
                    index, pid = started_queue.get()
                    started[index] = (time.monotonic(), pid)
                for future in done:
                    try:
                        index, labels, seconds = future.result()
                    except BrokenProcessPool as exc:
                        broken = exc
                        continue  # stays in flight: resubmitted or failed below
                    except Exception as exc:  # the task itself raised: not the oracle's per-structure failure
                        index, labels, seconds = in_flight[future], _failed(oracle, f"executor: {_reason(exc)}"), 0.0
                    del in_flight[future]
                    suspects.discard(index)
                    on_label(index, labels, seconds)
                if self.timeout is not None:
                    now = time.monotonic()
                    for future, index in list(in_flight.items()):
                        if index in started and now - started[index][0] > self.timeout:
                            _kill(started[index][1])
                            killed = True
                            del in_flight[future]
                            suspects.discard(index)
                            on_label(index, _failed(oracle, timeout_reason(self.timeout)), now - started[index][0])
        except BaseException:
            # Interrupted (Ctrl-C, a caller's callback raised): a hung structure must not keep
            # us waiting, so kill what is running rather than let it finish.
            while not started_queue.empty():
                index, pid = started_queue.get()
                started[index] = (time.monotonic(), pid)
            for index in in_flight.values():
                if index in started:
                    _kill(started[index][1])
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
        # What was still in flight runs again in a new pool: after a kill of ours without blame,
        # after a crash as a suspect that uses up one of its retries.
        for index in sorted(in_flight.values(), reverse=True):
            if not killed:
                attempts[index] += 1
                if attempts[index] > self.retries:
                    suspects.discard(index)
                    on_label(index, _failed(oracle, f"executor: the worker process died while labelling it, "
                                                    f"{attempts[index]} times ({_reason(broken)})"), 0.0)
                    continue
                suspects.add(index)
            todo.appendleft(index)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own meanwhile
        pass


# ---------------------------------------------------------------------------- Dask
def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ValueError("executor kind dask needs dask.distributed: pip install 'openmm-adv[dask]'") from exc
    return distributed


def start_dask(cluster: str = "local", workers: int = 1, address: str | None = None, threads_per_worker: int = 1,
               retries: int = 2, options: dict | None = None, daemon_workers: bool = True):
    """A Dask client on a new or running cluster, and the cluster when it was started here.

    Parameters
    ----------
    cluster : str
        ``local`` (a ``LocalCluster`` of ``workers`` processes on this machine), ``address``
        (the running scheduler at ``address``; its workers are its own), or a batch system of
        :data:`JOBQUEUE_CLUSTERS` (``slurm``, ``pbs``, ...), scaled to ``workers`` workers.
    workers : int
    address : str, optional
        Scheduler address (``tcp://host:8786``) for ``cluster="address"``.
    threads_per_worker : int
        Threads of each worker of a LocalCluster (jobqueue: ``cores`` / ``processes`` in
        ``options`` decide it).
    retries : int
        Times the scheduler reruns a task whose worker died (Dask's
        ``distributed.scheduler.allowed-failures``), for clusters whose scheduler starts here.
    options : dict, optional
        Keyword arguments of ``LocalCluster`` or of the dask-jobqueue cluster class (``cores``,
        ``memory``, ``queue``, ``account``, ``walltime``, ``job_script_prologue``, ...).
    daemon_workers : bool
        False lets the workers of a LocalCluster start processes of their own (a loop that
        labels in a process pool inside a worker).

    Returns
    -------
    (distributed.Client, cluster or None)
        Close the client, then the cluster.

    Raises
    ------
    ValueError
        For an unknown cluster kind, a missing package, a scheduler that cannot be reached, or
        options the cluster class refuses.
    """
    distributed = _import_distributed()
    import dask

    options = dict(options or {})
    if cluster not in DASK_CLUSTERS:
        raise ValueError(f"unknown dask cluster {cluster!r}; use one of {', '.join(DASK_CLUSTERS)}")
    if cluster == "address":
        if not address:
            raise ValueError("dask cluster 'address' needs the scheduler's address, e.g. tcp://host:8786")
        try:
            return distributed.Client(address, timeout=options.pop("timeout", 30), **options), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"cannot reach the dask scheduler at {address} ({_reason(exc)}); start it "
                             "('dask scheduler') or fix the address") from exc
    # Read once, when the scheduler starts (here, for these kinds). A saturation of 1 sends a
    # worker only as many tasks as it has threads: when it dies, only the tasks that were
    # running on it are blamed, not the ones queued behind them.
    settings = {"distributed.scheduler.allowed-failures": int(retries),
                "distributed.scheduler.worker-saturation": 1.0}
    if not daemon_workers:
        # Read by each nanny whenever it (re)starts its worker, so it must outlive this call.
        dask.config.set({"distributed.worker.daemon": False})
    if cluster == "local":
        # A LocalCluster closes a worker's nanny for good when, 15 s (lost-worker-timeout) after
        # that worker left, no worker of its name is there; one whose nanny is restarting it
        # again just then (it died twice, or hung after a crash) is lost with it. Nannies on
        # this machine restart their workers themselves, so that clean-up is not needed; it is
        # read when a worker leaves, so the setting must outlive this call.
        dask.config.set({"distributed.deploy.lost-worker-timeout": 10**9})
    with dask.config.set(settings):
        if cluster == "local":
            options = {"n_workers": int(workers), "threads_per_worker": int(threads_per_worker), "processes": True,
                       "dashboard_address": None, **options}
            try:
                made = distributed.LocalCluster(**options)
            except TypeError as exc:
                raise ValueError(f"executor options: LocalCluster refuses them ({first_line(exc)})") from exc
        else:
            try:
                import dask_jobqueue
            except ImportError as exc:
                raise ValueError(f"dask cluster {cluster!r} needs dask-jobqueue: "
                                 "pip install 'openmm-adv[dask]'") from exc
            cls = getattr(dask_jobqueue, JOBQUEUE_CLUSTERS[cluster])
            try:
                made = cls(**options)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"executor options: {cls.__name__} refuses them ({first_line(exc)}); see "
                                 "examples/dask_slurm for a working set") from exc
            made.scale(n=int(workers))
    return distributed.Client(made), made


class DaskLabeller(Labeller):
    """Label on a ``dask.distributed`` cluster, one task per structure.

    Parameters
    ----------
    cluster, workers, address, threads_per_worker, options :
        Where, as for :func:`start_dask`; started at the first :meth:`run` (a scheduler
        address is connected to at once, so that a wrong one fails before any work), and
        kept until :meth:`close`.
    timeout : float, optional
        Seconds per structure, counted from when a worker starts it (workers announce each
        start as a Dask event). A structure that runs over is cancelled, recorded as failed,
        and its worker restarted by its nanny (workers started without one cannot be).
    retries : int
        Reruns of a structure whose worker died (see :func:`start_dask`); a structure that
        killed more workers than that is recorded as failed (``KilledWorker``).
    client : distributed.Client, optional
        Use this client (its cluster is the caller's) instead of starting one.

    Notes
    -----
    The pickled oracle travels inside each task (one of more than 1 MB once per run, as a task
    of its own that the scheduler recomputes if its worker dies, which a scattered object would
    not be) and is unpacked once per worker thread. A structure's label depends only on its
    coordinates, so a rerun task gives the label a first attempt would have given.
    """

    def __init__(self, cluster: str = "local", workers: int = 1, address: str | None = None,
                 threads_per_worker: int = 1, timeout: float | None = None, retries: int = 2,
                 options: dict | None = None, client=None):
        _import_distributed()
        if cluster not in DASK_CLUSTERS:
            raise ValueError(f"unknown dask cluster {cluster!r}; use one of {', '.join(DASK_CLUSTERS)}")
        if int(workers) < 1 or int(threads_per_worker) < 1 or int(retries) < 0:
            raise ValueError(f"workers and threads_per_worker must be >= 1 and retries >= 0, got {workers}, "
                             f"{threads_per_worker}, {retries}")
        self.cluster_kind, self.workers, self.address = cluster, int(workers), address
        self.threads_per_worker, self.retries = int(threads_per_worker), int(retries)
        self.timeout = _check_timeout(timeout)
        self.options = dict(options or {})
        self._client, self._cluster, self._owns_client = client, None, client is None
        self._restarts: list[threading.Thread] = []
        if client is None and cluster == "address":
            self.client  # connect now: a wrong address fails before any work

    @property
    def client(self):
        """The Dask client, started on first use."""
        if self._client is None:
            self._client, self._cluster = start_dask(self.cluster_kind, self.workers, self.address,
                                                     self.threads_per_worker, self.retries, self.options)
        return self._client

    def describe(self) -> str:
        where = {"local": f"a dask LocalCluster of {self.workers} worker(s)",
                 "address": f"the dask scheduler at {self.address}"}.get(
            self.cluster_kind, f"dask-jobqueue {self.cluster_kind} ({self.workers} worker(s))")
        return where + (f", timeout {self.timeout:g} s" if self.timeout else "")

    def check(self, oracle) -> None:
        import cloudpickle

        _pack(oracle, cloudpickle.dumps)

    def close(self) -> None:
        for restart in self._restarts:  # let a restart finish rather than cut it off
            restart.join(timeout=60)
        self._restarts = []
        if self._owns_client and self._client is not None:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
            self._client = self._cluster = None

    def run(self, oracle, positions, on_label, indices=None):
        import cloudpickle
        from distributed import as_completed

        positions = np.asarray(positions, dtype=np.float64)
        indices = [int(i) for i in (range(len(positions)) if indices is None else indices)]
        if not indices:
            return
        blob, token = _pack(oracle, cloudpickle.dumps)  # cloudpickle: functions of a script travel too
        client = self.client
        run_id = uuid.uuid4().hex[:12]
        topic = f"openmm-adv-label-{run_id}"
        starts: dict[int, tuple[float, str]] = {}
        lock = threading.Lock()

        def on_start(event):  # runs in the client's event-loop thread
            msg = event[1]
            with lock:
                starts[msg["index"]] = (time.monotonic(), msg["worker"])

        def on_cluster_event(event):  # a worker left: its tasks' clocks restart when they do
            msg = event[1]
            if isinstance(msg, dict) and msg.get("action") == "remove-worker":
                with lock:
                    for index in [i for i, (_, w) in starts.items() if w == msg.get("worker")]:
                        del starts[index]

        threads = getattr(oracle, "threads", 1)
        timing = self.timeout is not None
        if timing:
            client.subscribe_topic(topic, on_start)
            client.subscribe_topic("all", on_cluster_event)
        # A small oracle travels inside every task: a worker that dies then holds nothing the
        # others wait for (fetching from a dead worker stalls for the connect timeout, 30 s).
        # A large one travels once, as a task the scheduler recomputes if its holder dies.
        oracle_arg = blob if len(blob) <= _INLINE_ORACLE_BYTES else client.submit(
            _identity, blob, key=f"openmm-adv-oracle-{run_id}", pure=False)
        # Held only until handed over: a result still referenced would be recomputed when the
        # worker holding it dies.
        pending = {i: client.submit(_label_task, oracle_arg, token, i, positions[i], topic if timing else None,
                                    threads, key=f"openmm-adv-label-{run_id}-{i}", pure=False) for i in indices}
        index_of = {future.key: i for i, future in pending.items()}
        completed = as_completed(list(pending.values()))
        try:
            while pending:
                batch = completed.next_batch(block=not timing)
                for future in batch:
                    index = index_of[future.key]
                    if index not in pending:  # timed out and cancelled already
                        continue
                    try:  # waits if a worker died holding the result: the scheduler recomputes it
                        _, labels, seconds = future.result()
                    except Exception as exc:  # KilledWorker after too many worker deaths, an error of the task
                        labels, seconds = _failed(oracle, f"executor: {_reason(exc)}"), 0.0
                    del pending[index]
                    future.release()
                    on_label(index, labels, seconds)
                del batch
                if timing:
                    self._enforce_timeout(client, oracle, pending, starts, lock, on_label)
                    time.sleep(0.1)
        finally:
            if timing:
                client.unsubscribe_topic(topic)
                client.unsubscribe_topic("all")
            client.cancel(list(pending.values()))
            if not isinstance(oracle_arg, bytes):
                oracle_arg.release()

    def _enforce_timeout(self, client, oracle, pending: dict, starts: dict, lock, on_label) -> None:
        now = time.monotonic()
        with lock:
            overdue = {i: s for i, s in starts.items() if i in pending and now - s[0] > self.timeout}
        if not overdue:
            return
        client.cancel([pending.pop(i) for i in overdue])
        workers = sorted({worker for _, worker in overdue.values()})
        for index, (start, _) in overdue.items():
            on_label(index, _failed(oracle, timeout_reason(self.timeout)), now - start)
        # The hung call goes on in its thread until the process ends: have the nanny restart
        # the worker (it kills a process that does not stop). In the background, as that takes
        # seconds and the other workers go on meanwhile.
        restart = threading.Thread(target=_restart_workers, args=(client, workers), daemon=True,
                                   name="openmm-adv-restart-hung-workers")
        restart.start()
        self._restarts.append(restart)


def _restart_workers(client, workers: list[str]) -> None:
    try:
        status = client.restart_workers(workers, raise_for_error=False)
    except Exception as exc:  # e.g. a worker without a nanny, or the client closed meanwhile
        status = {w: _reason(exc) for w in workers}
    stuck = {w: s for w, s in (status or {}).items() if s not in ("OK", "removed")}
    if stuck and client.status == "running":
        warnings.warn(f"dask workers {sorted(stuck)} ran over the labelling timeout and could not be restarted "
                      f"({stuck}); they stay busy until the hung calls return", RuntimeWarning, stacklevel=2)


# ---------------------------------------------------------------------------- from a config
def make_labeller(oracle_config=None, *, workers: int = 1, timeout: float | None = None, executor=None) -> Labeller:
    """The labeller an ``oracle`` config section asks for.

    Parameters
    ----------
    oracle_config : openmm_adv.config.OracleConfig, optional
        Reads ``workers``, ``timeout`` and ``executor``; without it, the keyword arguments.
    workers, timeout, executor :
        As in :class:`~openmm_adv.config.OracleConfig` (``executor`` an
        :class:`~openmm_adv.config.ExecutorConfig`; None: a process pool).

    Returns
    -------
    Labeller
        :class:`InProcessLabeller` for one process-kind worker without a timeout (a timeout
        needs a process to kill), :class:`ProcessLabeller` for more, :class:`DaskLabeller` for
        kind ``dask``.
    """
    if oracle_config is not None:
        workers, timeout, executor = oracle_config.workers, oracle_config.timeout, oracle_config.executor
    if executor is None or executor.kind == "process":
        retries = 2 if executor is None else executor.retries
        if int(workers) == 1 and timeout is None:
            return InProcessLabeller()
        return ProcessLabeller(workers, timeout, retries)
    return DaskLabeller(executor.cluster, workers, executor.address, executor.threads_per_worker, timeout,
                        executor.retries, executor.options)
