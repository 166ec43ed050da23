"""Training in time-limited slices: a run longer than one GPU call trains over several calls.

A Hugging Face ZeroGPU Space runs each ``@spaces.GPU`` call for at most ~300 s (``ANDRAEUS_ZEROGPU_MAX_S``, default
290 s, model loading included). :func:`train_slice` is one such call: resume the run (all but the first slice), train
until the time budget is nearly spent, write a checkpoint and return; :func:`run_in_slices` calls a slice runner until
the run is done, cancelled or failed. The runner is :func:`stream_slice` in-process (tests, a local machine,
:func:`train_in_slices`) or, in the web app, a GPU function that calls :func:`stream_slice` inside a ZeroGPU worker:
the loop is the same everywhere, so it runs — and is tested — on a CPU, where ``spaces.GPU`` is a no-op.

What a slice hands back is plain, picklable data (:class:`SliceResult`, :class:`~.recipe.ProgressEvent`): on ZeroGPU
it crosses a process boundary, where an exception other than ``gr.Error`` loses its message, so errors travel as data.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .adapter import Adapter
from .config import TrainConfig
from .errors import AndraeusError, TrainingCancelled, TrainingError, TrainingPaused
from .recipe import ProgressEvent
from .train import train

logger = logging.getLogger(__name__)

#: The most slices one run may take (a 7B run of a few hundred steps needs a handful).
MAX_SLICES = 100


class SliceResult(BaseModel):
    """How one slice of a training run ended."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["done", "paused", "cancelled", "failed"] = Field(
        description="done: the adapter is written; paused: a checkpoint is, call again to resume; cancelled; failed."
    )
    step: int = Field(0, description="Optimiser steps done when the slice ended.")
    total_steps: int = Field(0, description="Optimiser steps planned.")
    adapter: str | None = Field(None, description="The adapter directory (status done).")
    message: str = Field("", description="What happened, for the user (never a fact's value).")
    code: str | None = Field(None, description="The AndraeusError code of a failed slice.")
    seconds: float = Field(0.0, description="Wall time of the slice.")


def train_slice(
    profile_or_dataset: Any,
    config: TrainConfig,
    *,
    budget_s: float | None,
    resume: bool,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_dir: str | Path | None = None,
    user_name: str | None = None,
    parent: str | Path | None = None,
) -> SliceResult:
    """One slice of a run: :func:`~.train.train` with a time budget, its outcome as a :class:`SliceResult`.

    Args:
        profile_or_dataset: as for ``train``.
        config: as for ``train``; every slice of a run must get the same settings and data.
        budget_s: seconds this slice may take, loading included (None: no limit, the run ends in this slice).
        resume: continue from the run's last checkpoint (every slice but the first).
        on_progress, should_stop, out_dir, user_name, parent: as for ``train`` (``parent``: an update).
    """
    started = time.perf_counter()

    def took() -> float:
        return round(time.perf_counter() - started, 2)

    try:
        adapter = train(
            profile_or_dataset,
            config,
            on_progress,
            should_stop,
            resume=resume,
            out_dir=out_dir,
            user_name=user_name,
            time_budget_s=budget_s,
            parent=parent,
        )
    except TrainingPaused as exc:
        return SliceResult(
            status="paused", step=exc.step, total_steps=exc.total_steps, message=str(exc), seconds=took()
        )
    except TrainingCancelled as exc:
        return SliceResult(status="cancelled", message=str(exc), code=exc.code, seconds=took())
    except AndraeusError as exc:
        return SliceResult(status="failed", message=str(exc), code=exc.code, seconds=took())
    metrics = adapter.meta.metrics
    return SliceResult(
        status="done",
        step=metrics.steps,
        total_steps=metrics.planned_steps,
        adapter=str(adapter.path),
        message="adapter written",
        seconds=took(),
    )


def stream_slice(
    profile_or_dataset: Any,
    config: TrainConfig,
    *,
    budget_s: float | None,
    resume: bool,
    should_stop: Callable[[], bool] | None = None,
    out_dir: str | Path | None = None,
    user_name: str | None = None,
    parent: str | Path | None = None,
) -> Iterator[ProgressEvent | SliceResult]:
    """:func:`train_slice` on a thread: yields its progress events as they come, then its :class:`SliceResult`.

    Closing the generator early (the consumer went away) stops the training after the current step.
    """
    events: queue.Queue[ProgressEvent | None] = queue.Queue()
    abandoned = threading.Event()
    outcome: dict[str, Any] = {}

    def stop() -> bool:
        return abandoned.is_set() or (should_stop is not None and bool(should_stop()))

    def run() -> None:
        try:
            outcome["result"] = train_slice(
                profile_or_dataset,
                config,
                budget_s=budget_s,
                resume=resume,
                on_progress=events.put,
                should_stop=stop,
                out_dir=out_dir,
                user_name=user_name,
                parent=parent,
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread below
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=run, daemon=True, name="train-slice")
    thread.start()
    try:
        while (event := events.get()) is not None:
            yield event
    finally:
        if thread.is_alive():
            abandoned.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["result"]


SliceRunner = Callable[[bool, float | None], Iterable[Any]]


def run_in_slices(
    run_slice: SliceRunner,
    *,
    budget_s: float | None | Callable[[SliceResult | None], float | None],
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    max_slices: int = MAX_SLICES,
) -> Iterator[Any]:
    """Call ``run_slice(resume, budget_s)`` until a slice ends the run, yielding everything the slices yield.

    Each slice yields progress events and, last, a :class:`SliceResult`. The first slice resumes only when
    ``resume`` is set; every later one resumes the checkpoint the one before paused at. The loop ends after a
    slice that is done, cancelled or failed, or when ``should_stop`` is true between two slices (a cancelled
    SliceResult is yielded then).

    Args:
        run_slice: one slice; :func:`stream_slice` bound to a profile and config, or a GPU function calling it.
        budget_s: seconds per slice, or a function of the previous slice's result (None for the first) giving it;
            None: no limit (the run ends in its first slice).
        resume: the first slice continues an earlier, paused run.
        should_stop: polled between slices (within a slice, the runner's own ``should_stop`` applies).
        max_slices: a bound on the calls.

    Raises:
        TrainingError: a slice made no progress (the budget is too short to load the model and train a step), a
            slice ended without a result, or the run needed more than ``max_slices`` slices.
    """
    last: SliceResult | None = None
    for index in range(max_slices):
        if last is not None and should_stop is not None and should_stop():
            yield SliceResult(
                status="cancelled",
                step=last.step,
                total_steps=last.total_steps,
                message=f"Training was cancelled at step {last.step} of {last.total_steps}; no adapter was written.",
                code=TrainingCancelled.code,
            )
            return
        seconds = budget_s(last) if callable(budget_s) else budget_s
        result: SliceResult | None = None
        for item in run_slice(resume or index > 0, seconds):
            if isinstance(item, SliceResult):
                result = item
            yield item
        if result is None:
            raise TrainingError(f"Training slice {index + 1} ended without a result; nothing was written.")
        if result.status != "paused":
            return
        if last is not None and result.step <= last.step:
            raise TrainingError(
                f"A training slice of {seconds or 0:.0f}s made no progress (stuck at step {result.step} of "
                f"{result.total_steps}): loading the model takes most of it. Raise ANDRAEUS_ZEROGPU_MAX_S or choose "
                "a smaller base model."
            )
        logger.info("Training slice %d paused at step %d of %d", index + 1, result.step, result.total_steps)
        last = result
    raise TrainingError(f"Training needed more than {max_slices} slices; choose fewer epochs or a smaller model.")


def train_in_slices(
    profile_or_dataset: Any,
    config: TrainConfig,
    *,
    slice_s: float,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_slice: Callable[[SliceResult], None] | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    user_name: str | None = None,
) -> Adapter:
    """Train in this process in slices of at most ``slice_s`` seconds each, as a ZeroGPU Space does over its calls.

    Args:
        slice_s: seconds per slice, loading included.
        on_progress, should_stop, out_dir, user_name: as for ``train``.
        on_slice: called with each slice's result.
        resume: the first slice continues an earlier, paused run.

    Raises:
        TrainingCancelled, TrainingError and the other errors of ``train``.
    """

    def run_slice(resume_slice: bool, budget: float) -> Iterator[ProgressEvent | SliceResult]:
        return stream_slice(
            profile_or_dataset,
            config,
            budget_s=budget,
            resume=resume_slice,
            should_stop=should_stop,
            out_dir=out_dir,
            user_name=user_name,
        )

    final: SliceResult | None = None
    for item in run_in_slices(run_slice, budget_s=slice_s, resume=resume, should_stop=should_stop):
        if isinstance(item, SliceResult):
            final = item
            if on_slice is not None:
                on_slice(item)
        elif on_progress is not None:
            on_progress(item)
    if final is None:
        raise TrainingError("Training ended without a result; nothing was written.")
    if final.status == "cancelled":
        raise TrainingCancelled(final.message)
    if final.status == "failed":
        raise _failure(final)
    assert final.adapter is not None  # a done slice always names its adapter
    return Adapter.load(final.adapter)


def _failure(result: SliceResult) -> AndraeusError:
    """The error a failed slice stands for, rebuilt from its code and message (all a slice hands back)."""
    for cls in AndraeusError.__subclasses__():
        if cls.code == result.code:
            try:
                return cls(result.message)
            except TypeError:  # a class that needs more than a message
                break
    return TrainingError(result.message)


__all__ = [
    "MAX_SLICES",
    "SliceResult",
    "SliceRunner",
    "run_in_slices",
    "stream_slice",
    "train_in_slices",
    "train_slice",
]
