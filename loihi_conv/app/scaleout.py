"""Scale-out: run evaluation shards and search trials on worker processes or a Ray cluster.

A *pool* runs a picklable module-level function ``fn(context, *args)`` over a list of argument
tuples and returns the results in input order. The ``context`` (a network, calibration
images...) is pickled once and shipped to every worker once, when the pool starts; only each
call's own arguments (an image shard, a trial's knobs) travel per call.

Executors, registered by name: ``inline`` (this process; workers=1 without Ray), ``processes``
(``concurrent.futures.ProcessPoolExecutor``, spawn start method: a fork would copy Lava's and
torch's threads), ``ray`` (one Ray actor per worker; ``ray`` is imported only here and only
when asked). Each worker runs ``max(1, cores // workers)`` torch threads.

Image shards are contiguous and start at multiples of the batch size, so every batch a worker
runs is one a single process would run, and concatenating the shards' results in order gives
the single-process output exactly.
"""
from __future__ import annotations

import inspect
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from loihi_conv.base import devices
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.registry import lookup, registrar

EXECUTORS: dict[str, type] = {}
register_executor = registrar(EXECUTORS, "executor")
RAY_PIN = "ray==2.60.0"  # pinned in pyproject.toml / requirements/lock.txt
SHARDS_PER_WORKER = 2  # a little slack for uneven shards, and progress ticks


@dataclass(frozen=True)
class Scale:
    """Where evaluation runs: ``workers`` processes (None: 1, or every CPU of the Ray cluster),
    on a Ray cluster at ``ray`` ("local" starts one on this machine), torch ``device``."""
    workers: int | None = None
    ray: str | None = None
    device: str = "cpu"

    @property
    def executor(self) -> str:
        return "ray" if self.ray else "processes" if (self.workers or 1) > 1 else "inline"

    def check(self) -> "Scale":
        """One clear error now, before any work, for a bad worker count or device."""
        if self.workers is not None and self.workers < 1:
            raise LoihiConvError(f"--workers must be at least 1, got {self.workers}", "pass e.g. --workers 2")
        devices.resolve(self.device)
        return self


def device_kw(fn: Callable, device) -> dict:
    """``{"device": ...}`` for ``fn`` if it takes one; an engine without ``device`` runs on cpu only."""
    dev = devices.resolve(device)
    if "device" in inspect.signature(fn).parameters:
        return {"device": dev}
    if dev.type != "cpu":
        raise LoihiConvError(f"{fn.__module__}.{fn.__name__} runs on the cpu only in this version",
                             "use --device cpu")
    return {}


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or os.cpu_count() or 1) // workers)


def shard_bounds(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``parts`` (or fewer) contiguous, near-equal [start, stop) ranges covering ``range(n)``,
    every start a multiple of ``align``."""
    blocks = -(-n // align)
    parts = max(1, min(parts, blocks))
    cuts = [min(n, (blocks * i // parts) * align) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


class Pool:
    """``with open_pool(scale, context) as pool: pool.map(fn, [args, ...])``."""
    workers: int = 1
    startup_seconds: float = 0.0

    def imap(self, fn: Callable, calls: list[tuple]) -> Iterator:
        """The results of ``fn(context, *args)`` for every ``args`` in ``calls``, in order, as they come."""
        raise NotImplementedError

    def map(self, fn: Callable, calls: list[tuple]) -> list:
        return list(self.imap(fn, calls))

    def close(self, failed: bool = False) -> None:
        """Release the workers; ``failed`` (an error or Ctrl-C in the caller): stop them now."""

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(failed=kind is not None)


_CONTEXT: Any = None  # a worker process's context, set once by _init_worker


def _init_worker(blob: bytes, threads: int) -> None:
    import signal

    import torch

    global _CONTEXT
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle: it stops the workers
    torch.set_num_threads(threads)
    _CONTEXT = pickle.loads(blob)


def _call(fn: Callable, args: tuple):
    return fn(_CONTEXT, *args)


@register_executor("inline")
class InlinePool(Pool):
    def __init__(self, scale: Scale, context: Any):
        self.context = context

    def imap(self, fn, calls):
        return (fn(self.context, *args) for args in calls)


@register_executor("processes")
class ProcessPool(Pool):
    def __init__(self, scale: Scale, context: Any):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = scale.workers or 1
        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker,
                                        initargs=(pickle.dumps(context), threads_per_worker(self.workers)))

    def imap(self, fn, calls):
        futures = [self.pool.submit(_call, fn, args) for args in calls]
        return (f.result() for f in futures)

    def close(self, failed=False):
        if failed:  # do not wait minutes for shards nobody will read
            for proc in list((self.pool._processes or {}).values()):  # our own children
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


@register_executor("ray")
class RayPool(Pool):
    """One actor per worker, each holding the context (``ray.put`` once, fetched once per actor)."""

    def __init__(self, scale: Scale, context: Any):
        import time

        ray = _import_ray()
        t0 = time.perf_counter()
        self.started = not ray.is_initialized()
        if self.started:
            local = scale.ray == "local"
            try:
                ray.init(address=None if local else scale.ray, num_cpus=(scale.workers or os.cpu_count()) if local
                         else None, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
                raise LoihiConvError(f"cannot start or reach Ray at {scale.ray!r} ({type(e).__name__}: {e})",
                                     "pass --ray local, or the address of a running cluster "
                                     "(ray start --head prints it)") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = scale.workers or cpus
        threads = threads_per_worker(self.workers, cpus)
        actor = ray.remote(num_cpus=min(threads, cpus))(_RayWorker)
        ref = ray.put(pickle.dumps(context))
        self.actors = [actor.remote(ref, threads) for _ in range(self.workers)]
        ray.get([a.ready.remote() for a in self.actors])
        self.startup_seconds = time.perf_counter() - t0
        self.ray = ray

    def imap(self, fn, calls):
        from ray.util import ActorPool

        return ActorPool(self.actors).map(lambda a, args: a.run.remote(fn, args), calls)

    def close(self, failed=False):
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


class _RayWorker:
    def __init__(self, blob: bytes, threads: int):
        _init_worker(blob, threads)

    def ready(self) -> bool:
        return True

    def run(self, fn, args):
        return _call(fn, args)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise LoihiConvError("--ray needs the ray package, which is not installed",
                             f"pip install {RAY_PIN} (scripts/setup.sh installs it)") from None
    return ray


def open_pool(scale: Scale | None, context: Any) -> Pool:
    """A pool for ``scale`` (None: this process) whose workers all hold ``context``."""
    scale = (scale or Scale()).check()
    return lookup(EXECUTORS, scale.executor, "executor")(scale, context)


# --- the jobs ---------------------------------------------------------------------------------


def _emulate_shard(ctx: dict, x, timesteps: int, batch_size: int, device: str):
    from loihi_conv.emulate import emulator_predictions

    return emulator_predictions(ctx["qnet"], x, timesteps, batch_size=batch_size,
                                **device_kw(emulator_predictions, device))


def emulator_predictions(qnet, x, timesteps: int, batch_size: int = 256, scale: Scale | None = None,
                         progress: Callable = iter):
    """Emulator predictions (N,) of the analog inputs ``x``, sharded over ``scale``'s workers;
    equal to ``loihi_conv.emulate.emulator_predictions`` on all of ``x`` in one process."""
    import numpy as np

    scale = scale or Scale()
    with open_pool(scale, {"qnet": qnet}) as pool:
        bounds = _bounds(len(x), pool.workers, batch_size, per_batch=True)
        calls = [(x[a:b], timesteps, batch_size, scale.device) for a, b in bounds]
        parts = list(progress(pool.imap(_emulate_shard, calls)))
    return np.concatenate([np.asarray(p) for p in parts]).astype(np.int64)


def _simulate_shard(ctx: dict, x, timesteps, delay: int, batch_size: int, device: str):
    from loihi_conv.snn.simulate import simulate

    res = simulate(ctx["snn"], x, timesteps, delay=delay, record=False, batch_size=batch_size,
                   **device_kw(simulate, device))
    return res


def simulate(snn, x, timesteps, delay: int = 1, batch_size: int = 500, scale: Scale | None = None):
    """``snn.simulate.simulate(..., record=False)`` sharded over ``scale``'s workers: the output
    scores of every shard, concatenated in order into one ``SimResult``."""
    import torch

    scale = scale or Scale()
    with open_pool(scale, {"snn": snn}) as pool:
        bounds = _bounds(len(x), pool.workers, batch_size)
        parts = pool.map(_simulate_shard, [(x[a:b], tuple(timesteps), delay, batch_size, scale.device)
                                           for a, b in bounds])
    res = parts[0]
    res.output = {T: torch.cat([p.output[T] for p in parts]) for T in res.timesteps}
    return res


def _bounds(n: int, workers: int, batch_size: int, per_batch: bool = False) -> list[tuple[int, int]]:
    """Shards of whole batches: one per batch (``per_batch``, for progress) or a few per worker."""
    parts = -(-n // batch_size) if per_batch else workers * SHARDS_PER_WORKER
    return shard_bounds(n, parts, batch_size)
