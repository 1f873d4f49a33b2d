"""Dynamic batching: requests of many clients wait in one bounded queue; a worker thread takes the oldest,
gathers the waiting requests that can share its batch (the same `key`) until the batch holds `max_batch`
images or `max_wait_s` has passed since the oldest arrived or since the worker became free, whichever is
later, runs them as one batch and answers each. Counting from when the worker became free lets the clients
of the batch just answered join the next one: otherwise clients that send a request as soon as they have an
answer stay split into two half batches that take turns.

The scheduler knows nothing of models or HTTP: a job is anything with `key`, `n` (images), `arrived`
(`time.perf_counter()` at arrival) and a `concurrent.futures.Future`; `run(jobs)` answers the futures of one
batch (an exception it raises answers them all).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol


class Job(Protocol):
    key: Hashable
    n: int
    arrived: float
    future: Future


class QueueFull(Exception):
    """The queue holds its maximum; `retry_after_s`: a guess of when a place frees up."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the queue is full; retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class Counters:
    """What the scheduler did: requests answered / cancelled before they ran, batches, images, the
    seconds of the last batch, and the batch being run (requests)."""

    answered: int = 0
    cancelled: int = 0
    batches: int = 0
    images: int = 0
    last_batch_s: float = 0.0
    running: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class Scheduler:
    """Args:
    run: answers one batch of jobs that share a key (sets each job's future).
    max_batch: images per batch (a job of more images is refused by the caller, never split).
    max_wait_s: how long the oldest waiting job may wait for others to fill its batch (counted from when
        the worker became free where that is later).
    queue: jobs that may wait (not counting the batch being run); one more is refused with QueueFull.
    """

    def __init__(self, run: Callable[[list], None], max_batch: int, max_wait_s: float, queue: int) -> None:
        self.run, self.max_batch, self.max_wait_s, self.queue = run, max_batch, max_wait_s, queue
        self.counters = Counters()
        self._waiting: deque = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._free_since = 0.0  # perf_counter() when the worker finished its last batch
        self._thread = threading.Thread(target=self._loop, name="argen-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Run what is waiting, then end the worker (the batch being run finishes)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise QueueFull(1)
            if len(self._waiting) >= self.queue:
                raise QueueFull(self._retry_after())
            self._waiting.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> bool:
        """Take a job that has not started off the queue (its client left): True when it was waiting."""
        with self._cond:
            if job not in self._waiting:
                return False
            self._waiting.remove(job)
            self.counters.cancelled += 1
        job.future.cancel()
        return True

    def _retry_after(self) -> int:
        batches_ahead = len(self._waiting) / self.max_batch + 1
        return max(1, math.ceil(batches_ahead * self.counters.last_batch_s))

    def _take(self) -> list | None:
        """The next batch: the oldest job and the waiting jobs of its key, oldest first, up to max_batch
        images, once they fill the batch or the wait is over; None when stopped and nothing waits."""
        with self._cond:
            while True:
                if not self._waiting:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                if self._stopping:  # draining: no more waiting for company
                    break
                oldest = self._waiting[0]
                images = sum(j.n for j in self._waiting if j.key == oldest.key)
                left = max(oldest.arrived, self._free_since) + self.max_wait_s - time.perf_counter()
                if images >= self.max_batch or left <= 0:
                    break
                self._cond.wait(left)
            key, batch, images = self._waiting[0].key, [], 0
            for job in list(self._waiting):
                if job.key == key and images + job.n <= self.max_batch:
                    batch.append(job)
                    images += job.n
                    self._waiting.remove(job)
            self.counters.running = len(batch)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            t0 = time.perf_counter()
            if batch:
                try:
                    self.run(batch)
                except Exception as e:  # a failed batch answers its requests with the error; serving goes on
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(e)
            with self._cond:
                c, images = self.counters, sum(job.n for job in batch)
                c.running, self._free_since = 0, time.perf_counter()
                if batch:
                    c.batches, c.answered = c.batches + 1, c.answered + len(batch)
                    c.images, c.last_batch_s = c.images + images, time.perf_counter() - t0
                    c.batch_sizes[images] = c.batch_sizes.get(images, 0) + 1
