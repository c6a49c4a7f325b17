"""Batch inference spread over a Ray cluster: a pool of actors, one model load each.

:func:`fracseg.inference.batch.run_batch` plans the inputs, skips what earlier runs completed, holds the
output folder's lock and writes ``predictions.csv`` exactly as without Ray; only the images left to do
are sent here. Each worker is a Ray actor holding one :class:`~fracseg.inference.predictor.Predictor`,
built from the same arguments as the driver's, and runs
:func:`~fracseg.inference.batch.predict_and_write` per image: the same reader, network, decision rule,
atomic writers and resume record as a single-process run, so the answers are the same.

Workers read the inputs and write the outputs themselves, so on a multi-machine cluster the inputs, the
output folder and the bundle must be visible at the same paths on every node (a shared file system).

Faults: a worker that dies (killed, out of memory, node lost) loses only the images in flight on it;
they are sent again to another worker (``retries`` times each) and a replacement worker is started, and
an image that keeps killing its workers is recorded as failed. Its partial files never count: outputs
are renamed into place and the record is written last, and temporaries are cleaned when the run ends.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracseg.errors import FracsegError
from fracseg.inference.inputs import InputFile
from fracseg.io import remove_stale_temporaries

logger = logging.getLogger(__name__)

#: Images queued on each worker at once, so that a worker never waits for the driver between images.
QUEUE_DEPTH = 2


@dataclass(frozen=True)
class RayOptions:
    """How ``fracseg infer --ray`` uses Ray.

    Args:
        address: a running cluster (``ray start --head`` prints it; ``auto`` finds a local one);
            ``None``: a private Ray started in this process on loopback and stopped at the end (or the
            one this process already joined with ``ray.init``).
        workers: number of worker actors; default: one per ``cpus_per_worker`` CPUs of the cluster, or
            one per GPU when ``predictor_kwargs["device"]`` is a CUDA device.
        cpus_per_worker: CPUs reserved by each worker, and its torch thread count.
        retries: how often an image is sent again after the worker running it died.
        predictor_kwargs: keyword arguments of :class:`~fracseg.inference.predictor.Predictor`, the same
            the driver's predictor was built with (paths must be valid on every node).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    retries: int = 2
    predictor_kwargs: dict[str, Any] = field(default_factory=dict)


class InferenceWorker:
    """One Ray actor: a predictor loaded once, then one image per call."""

    def __init__(self, predictor_kwargs: dict[str, Any], output: str, settings: dict[str, Any]) -> None:
        import torch

        from fracseg.inference.predictor import Predictor

        threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
        if threads > 0:  # Ray sets it to the CPUs reserved for this actor
            torch.set_num_threads(threads)
        self.predictor = Predictor(**predictor_kwargs)
        self.output = Path(output)
        self.settings = settings
        mine = {**self.predictor.settings(), "dicom_seg": settings.get("dicom_seg", False)}
        if mine != settings:  # other weights, bundle or package versions on this node: other answers
            changed = sorted(k for k in {*mine, *settings} if mine.get(k) != settings.get(k))
            raise FracsegError(f"Ray worker on {os.uname().nodename}: model settings differ ({changed})")

    def describe(self) -> dict[str, Any]:
        import torch

        return {"pid": os.getpid(), "node": os.uname().nodename, "threads": torch.get_num_threads()}

    def process(self, item: InputFile) -> dict[str, Any]:
        from fracseg.inference.batch import predict_and_write

        return predict_and_write(self.predictor, self.output, item, self.settings)


class DispatchProbe:
    """A worker that answers at once: what remains of a run is Ray's and the dispatcher's own cost per image
    (``scripts/bench_scale.py``). Defined here, importable by workers: Ray ships a class defined in a script's
    ``__main__`` by value, and such an actor costs about 14 ms more per call."""

    def __init__(self, predictor_kwargs: dict[str, Any], output: str, settings: dict[str, Any]) -> None:
        self.output = output

    def describe(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": os.uname().nodename, "threads": 1}

    def process(self, item: InputFile) -> dict[str, Any]:
        return {"image": str(item.path), "error": ""}


def start_ray(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a private local Ray; returns whether this call started or
    joined it (and so should shut it down). Usage statistics are off: nothing leaves the machine."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None and "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
        # A cluster from `ray start` (Ray >= 2.52) requires its token; a client sends it only in token mode.
        os.environ["RAY_AUTH_MODE"] = "token"
    if address is None:
        # Ray's single-machine mode: every Ray process listens on 127.0.0.1 only, not the host's
        # address (the variable is Ray's switch for that mode; it must be set before ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise FracsegError("--ray needs Ray: pip install 'fracseg[ray]'") from exc

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a new local instance"
        raise FracsegError(f"cannot start or reach Ray at {where}: {exc}") from exc
    return True


def _auth_token_available() -> bool:
    """Whether this machine holds a Ray cluster token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``, where ``ray start`` leaves it)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def _pool_size(options: RayOptions, gpu: bool) -> int:
    import ray

    if options.workers is not None:
        if options.workers < 1:
            raise FracsegError(f"--workers must be at least 1 with --ray, not {options.workers}")
        return options.workers
    resources = ray.cluster_resources()
    if gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) // max(1, options.cpus_per_worker))


def predict_on_ray(
    todo: Sequence[InputFile],
    output: Path,
    settings: dict[str, Any],
    options: RayOptions,
    quiet: bool = False,
    worker_class: type = InferenceWorker,
    timings: dict[str, float] | None = None,
) -> dict[InputFile, dict[str, Any]]:
    """Run every input of ``todo`` on a pool of Ray workers; returns ``{input: predictions.csv row}``.

    ``worker_class`` (default :class:`InferenceWorker`) and ``timings`` (filled with ``startup_s``, until
    every worker has loaded the model, and ``images_s``, from then to the last answer) serve
    ``scripts/bench_scale.py``.

    Raises:
        FracsegError: Ray cannot be started or reached, or no worker could load the model.
    """
    if not todo:
        return {}
    owned = start_ray(options.address)
    try:
        return _dispatch(list(todo), output, settings, options, quiet, worker_class, timings)
    finally:
        if owned:
            import ray

            ray.shutdown()


def _dispatch(
    todo: list[InputFile],
    output: Path,
    settings: dict[str, Any],
    options: RayOptions,
    quiet: bool,
    worker_class: type,
    timings: dict[str, float] | None,
) -> dict[InputFile, dict[str, Any]]:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from tqdm import tqdm

    from fracseg.inference.batch import error_message, failed_row

    gpu = str(options.predictor_kwargs.get("device", "cpu")).startswith("cuda")
    size = min(_pool_size(options, gpu), len(todo))
    cpus = max(1, options.cpus_per_worker)
    started = time.perf_counter()
    actor_class = ray.remote(worker_class).options(
        num_cpus=cpus, num_gpus=1 if gpu else 0, max_restarts=0, max_task_retries=0
    )

    def spawn() -> Any:
        return actor_class.remote(options.predictor_kwargs, str(output), settings)

    actors: list[Any] = [spawn() for _ in range(size)]
    try:
        described = ray.get([a.describe.remote() for a in actors])
    except RayActorError as exc:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        raise FracsegError(f"Ray workers could not load the model: {exc}") from exc
    ready = time.perf_counter()
    logger.info(
        "Ray: %d worker(s) (%s), %d CPU(s) each, %d image(s)",
        size,
        ", ".join(sorted({d["node"] for d in described})),
        cpus,
        len(todo),
    )
    queue = deque(todo)
    attempts: Counter[InputFile] = Counter()
    rows: dict[InputFile, dict[str, Any]] = {}
    inflight: dict[Any, tuple[int, Any, InputFile]] = {}
    replacements_left = 2 * size + options.retries

    def top_up() -> None:
        for slot, actor in enumerate(actors):
            queued = sum(1 for s, a, _ in inflight.values() if s == slot and a is actor)
            while actor is not None and queue and queued < QUEUE_DEPTH:
                item = queue.popleft()
                inflight[actor.process.remote(item)] = (slot, actor, item)
                queued += 1

    bar = tqdm(total=len(todo), desc="fracseg infer (Ray)", unit="img", disable=quiet)
    top_up()
    try:
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            slot, actor, item = inflight.pop(ref)
            try:
                rows[item] = ray.get(ref)
            except RayActorError as exc:  # the worker died: only the images in flight on it are lost
                attempts[item] += 1
                if attempts[item] > options.retries:
                    message = f"{item.path}: Ray worker lost {attempts[item]} times while on this image"
                    rows[item] = failed_row(output, item, message)
                else:
                    queue.appendleft(item)
                if actors[slot] is actor:  # first news of this worker's death: replace it
                    logger.warning("Ray worker died (%s); %s", type(exc).__name__, item.path)
                    ray.kill(actor, no_restart=True)
                    actors[slot] = spawn() if replacements_left > 0 else None
                    replacements_left -= 1
            except RayTaskError as exc:  # an error the worker did not turn into a row: this image only
                rows[item] = failed_row(output, item, error_message(item, exc.cause or exc))
            if rows.get(item) is not None:
                if rows[item].get("error"):
                    logger.error("%s", rows[item]["error"])
                bar.update(1)
            top_up()
            if not inflight and queue:  # every worker is gone and none may be started any more
                for left in queue:
                    rows[left] = failed_row(output, left, f"{left.path}: no Ray worker left to run it")
                queue.clear()
    finally:
        bar.close()
        for actor in actors:
            if actor is not None:
                ray.kill(actor, no_restart=True)
    if timings is not None:
        timings.update(startup_s=ready - started, images_s=time.perf_counter() - ready)
    if stale := remove_stale_temporaries(output):  # left by workers that died mid-write
        logger.info("removed %d partial files left by lost Ray workers", stale)
    return rows
