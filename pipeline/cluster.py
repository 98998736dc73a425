"""The dask client of a build process: the configured scheduler, or a LocalCluster of ``compute.workers``
single-thread worker processes, started once per process. ``python -m pipeline build`` starts it in the
background while it indexes the datasets, so that the workers are up (torch imported) by the time the first
videos are handed to them."""
from __future__ import annotations

import threading

from .config import BuildConfig

# dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which also stops glibc from raising its mmap
# threshold: every large array (frames, detector pyramids, crops) is then mapped and zeroed afresh, and the
# extraction took 1.75x the CPU time (measured: 27 s against 15 s for the demo corpus in one process). Our
# workers keep glibc's defaults; their memory stays flat (bench/pipeline.py prints the peak). dask's
# statistical profiler (a stack sample every 10 ms, for the dashboard we do not start) cost them 8% of their
# CPU time. Each worker imports torch as it starts (it needs it for the detector; 2 s on a busy core), in
# parallel with what the orchestrator does meanwhile. configs/dask/workers.yaml says the same for the workers
# of a remote cluster.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False,
                 "distributed.worker.preload": ["torch"]}

_CLIENT: dict = {}  # scheduler address (or "local") -> Client
_FAILED: dict = {}  # the same key -> the error of a start in the background, raised by the next dask_client call
_LOCK = threading.Lock()  # one start at a time: a background start and the first task's call get one cluster
_CLOSING: list = []  # threads closing clients


def dask_client(config: BuildConfig):
    """The dask client of this process: the configured scheduler, or a LocalCluster started once."""
    key = _key(config)
    with _LOCK:
        if key in _FAILED:
            raise _FAILED.pop(key)
        if key not in _CLIENT:
            _CLIENT[key] = _connect(config)
        return _CLIENT[key]


def _key(config: BuildConfig) -> str:
    return config.compute.scheduler or "local"


def _connect(config: BuildConfig):
    import dask
    from dask.distributed import Client, LocalCluster
    if config.compute.scheduler:
        return _quiet_on_close(Client(config.compute.scheduler))
    with dask.config.set(WORKER_CONFIG):
        cluster = LocalCluster(n_workers=config.compute.worker_count(), threads_per_worker=1, processes=True,
                               dashboard_address=None)
    return _quiet_on_close(Client(cluster))


def _quiet_on_close(client):
    """``client`` with its event loop silent about the waits a closing client ends (``AllExit``): a build that
    stopped waiting for lost results (pipeline.tasks.ClusterWatch) leaves such waits behind, and asyncio would
    print each one's traceback at exit."""
    from distributed.client import AllExit
    loop = client.loop.asyncio_loop

    def handler(loop, context):
        if not isinstance(context.get("exception"), AllExit):
            loop.default_exception_handler(context)
    loop.set_exception_handler(handler)
    return client


def start_client(config: BuildConfig) -> None:
    """Start :func:`dask_client` in a background thread; the first call that needs the client waits for it, and
    gets the error if the start failed. Call it once this process has imported what it needs: a worker process
    starts with this process's sys.path as it is at that moment, and some imports edit it while they run
    (``import cv2`` puts its own folder first, and a worker spawned then finds cv2's ``typing`` package)."""
    def start():
        try:
            dask_client(config)
        except Exception as err:  # noqa: BLE001 - kept for the caller that needs the client
            with _LOCK:
                _FAILED[_key(config)] = err

    threading.Thread(target=start, name="start-dask-client", daemon=True).start()


def close_clients(wait: bool = True) -> None:
    """Close this process's dask clients and the clusters they started (after a start in the background has
    finished). ``wait=False`` closes them in a background thread (the workers take about a second to shut
    down), which the next call, or the interpreter's exit, waits for."""
    with _LOCK:
        clients = list(_CLIENT.values())
        _CLIENT.clear()
        _FAILED.clear()
    if clients:
        closing = threading.Thread(target=_close, args=(clients,), name="close-dask-clients")
        closing.start()
        _CLOSING.append(closing)
    if wait:
        while _CLOSING:
            _CLOSING.pop().join()


def _close(clients: list) -> None:
    for client in clients:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
