"""The one door to the job engine: procrastinate, over the service's own PostgreSQL.

Domains declare their background work in their own `tasks.py` with `@task(...)` and
`@periodic(...)` from this module, and defer it with `Jobs.defer`. The engine is chosen by
the database the service uses:

- PostgreSQL: procrastinate's psycopg connector. Jobs live in `procrastinate_jobs` (schema
  created by migration 0006); any number of `b2bscore worker` processes on any number of
  machines share them (LISTEN/NOTIFY wakes them, `SELECT ... FOR UPDATE SKIP LOCKED`
  hands each job to one worker), periodic tasks are deferred once per tick across all
  workers, a job's `lock` runs one job per lock at a time, and a `queueing_lock` keeps at
  most one such job waiting.
- SQLite (the embedded default): procrastinate's in-memory connector, and the API process
  runs the worker itself as a background task: the same task functions, the same
  scheduling and locks, but the queue lives in that process. What must survive a restart
  is never only in the queue: every domain keeps its durable state in its own tables
  (outbox rows, batch rows) and a periodic task re-defers what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import procrastinate
from procrastinate import exceptions as procrastinate_errors
from procrastinate import jobs as procrastinate_jobs
from procrastinate import tasks as procrastinate_tasks
from procrastinate.job_context import JobContext
from procrastinate.testing import InMemoryConnector
from sqlalchemy.engine import make_url

from b2bscore.kit.metrics import JOB_DURATION, JOBS_QUEUE_DEPTH
from b2bscore.kit.settings import Settings

if TYPE_CHECKING:
    from procrastinate.worker import Worker

    from b2bscore.kit.state import AppState

log = logging.getLogger(__name__)

__all__ = [
    "TASK_MODULES",
    "JobContext",
    "Jobs",
    "engine",
    "periodic",
    "state_of",
    "task",
]

# Every module that declares tasks: a worker imports them all before it takes a job. A new
# domain with background work adds its `tasks` module here.
TASK_MODULES: Final[tuple[str, ...]] = (
    "b2bscore.webhooks.tasks",
    "b2bscore.portfolio.tasks",
    "b2bscore.consents.tasks",
)

# The process's one procrastinate App. Its connector is set when a process opens Jobs:
# tasks keep a link back to the App, so that periodic deferring and `Task.configure` go
# through the connector of the running process.
engine = procrastinate.App(connector=InMemoryConnector(), import_paths=list(TASK_MODULES))
task = engine.task
periodic = engine.periodic

_STATE_KEY: Final = "b2bscore_state"


def state_of(context: JobContext) -> AppState:
    """The long-lived resources (pools, model, clients) of the worker running this job."""
    return cast("AppState", context.additional_context[_STATE_KEY])


def libpq_url(sqlalchemy_url: str) -> str:
    """The libpq URL psycopg expects, from the service's SQLAlchemy URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def _observe(
    call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: Worker
) -> Any:
    """Worker middleware: each job's outcome and duration, by task."""
    name = context.job.task_name if context.job is not None else "unknown"
    started = time.perf_counter()
    outcome = "failed"
    try:
        result = await call_next()
        outcome = "succeeded"
        return result
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        JOB_DURATION.labels(name, outcome).observe(time.perf_counter() - started)


@periodic(cron="* * * * * */10", periodic_id="stalled")
@task(name="jobs.retry_stalled", pass_context=True, queueing_lock="jobs.retry_stalled")
async def retry_stalled(context: JobContext, timestamp: int) -> int:
    """Every 10 s: put back the jobs of workers that died (no heartbeat) to run again."""
    seconds = state_of(context).settings.jobs_stalled_seconds
    stalled = list(await engine.job_manager.get_stalled_jobs(seconds_since_heartbeat=seconds))
    for job in stalled:
        try:
            await engine.job_manager.retry_job(job)
        except procrastinate_errors.UniqueViolation:
            # The same work is already waiting (its queueing lock): this copy just ends,
            # which also frees its lock for the waiting one.
            await engine.job_manager.finish_job(
                job, status=procrastinate_jobs.Status.FAILED, delete_job=False
            )
    if stalled:
        log.warning("re-queued %d jobs of stalled workers", len(stalled))
    return len(stalled)


class _Opened:
    """The process's engine connection, shared by every Jobs opened in the process.

    A process has one procrastinate App, hence one connector: the first Jobs to open sets
    it, later ones (several application states in one test process) share it, and the
    last to close closes it.
    """

    users = 0
    database: str | None = None
    stack = contextlib.ExitStack()
    lock = asyncio.Lock()


class Jobs:
    """The job engine of one process: opened once, defers jobs, runs a worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.in_memory = settings.is_embedded
        self._opened = False
        # False when the process's engine is open on another database (tests only).
        self.attached = True

    @property
    def runs_in_process(self) -> bool:
        """True when this process runs the worker itself (the embedded default)."""
        if self.settings.jobs_in_process is not None:
            return self.settings.jobs_in_process
        return self.in_memory

    def _connector(self) -> procrastinate.BaseConnector:
        if self.in_memory:
            return InMemoryConnector()
        return procrastinate.PsycopgConnector(
            conninfo=libpq_url(self.settings.resolved_database_url),
            min_size=1,
            max_size=self.settings.jobs_pool_size,
            # A worker that cannot reach the database must not hang its start for long.
            timeout=10,
        )

    async def open(self) -> None:
        """Point the engine at this process's connector and open its pool."""
        if self._opened:
            return
        # Every task known before the first defer: a job goes to its task's queue.
        engine.perform_import_paths()  # type: ignore[no-untyped-call]
        async with _Opened.lock:
            database = self.settings.resolved_database_url
            if _Opened.users == 0:
                _Opened.stack.enter_context(engine.replace_connector(self._connector()))
                try:
                    await engine.open_async()
                except BaseException:
                    _Opened.stack.close()
                    raise
                _Opened.database = database
            elif _Opened.database != database:
                # Another database's engine: this state must neither defer into nor run
                # that queue (its jobs would meet the wrong tables and keys).
                log.warning("job engine open on another database in this process: detached")
                self.attached = False
            _Opened.users += 1
        self._opened = True

    async def close(self) -> None:
        """Close the pool and restore the previous connector."""
        if not self._opened:
            return
        self._opened = False
        async with _Opened.lock:
            _Opened.users -= 1
            if _Opened.users:
                return
            try:
                await engine.close_async()
            finally:
                _Opened.stack.close()
                _Opened.database = None

    async def defer(
        self,
        task_name: str,
        *,
        lock: str | None = None,
        queueing_lock: str | None = None,
        schedule_at: datetime | None = None,
        priority: int = 0,
        **task_kwargs: Any,
    ) -> int | None:
        """Queue a job; None when a job with the same queueing lock is already waiting."""
        if not self.attached:
            return None
        known = engine.tasks.get(task_name)
        deferrer = procrastinate_tasks.configure_task(
            name=task_name,
            job_manager=engine.job_manager,
            queue=known.queue if known is not None else None,
            lock=lock,
            queueing_lock=queueing_lock,
            schedule_at=schedule_at,
            priority=priority,
            task_kwargs=task_kwargs,
        )
        try:
            return await deferrer.defer_async()
        except procrastinate_errors.AlreadyEnqueued:
            return None

    async def defer_many(self, task_name: str, items: list[tuple[str, dict[str, Any]]]) -> int:
        """Queue one job per (queueing lock, kwargs) in one round trip; where one of them is
        already waiting, one by one. How many were queued.

        No job `lock`: procrastinate's fetch looks, for each waiting job with a lock, for an
        earlier waiting job of the same lock without an index, so a hundred thousand waiting
        jobs of distinct locks made every fetch take seconds (measured: a sweep of 100,000
        checks ran 21 of them in 9 minutes). Tasks queued here tolerate running twice at once.
        """
        if not self.attached or not items:
            return 0
        known = engine.tasks.get(task_name)
        queue = known.queue if known is not None else procrastinate_jobs.DEFAULT_QUEUE
        batch = [
            procrastinate_jobs.Job(
                id=None,
                lock=None,
                queueing_lock=queueing_lock,
                task_name=task_name,
                queue=queue,
                task_kwargs=kwargs,
            )
            for queueing_lock, kwargs in items
        ]
        try:
            await engine.job_manager.batch_defer_jobs_async(batch)
            return len(batch)
        except procrastinate_errors.AlreadyEnqueued:
            queued = 0
            for queueing_lock, kwargs in items:
                queued += (
                    await self.defer(task_name, queueing_lock=queueing_lock, **kwargs) is not None
                )
            return queued

    async def queue_depth(self) -> dict[str, dict[str, int]]:
        """Jobs waiting and running per queue; also published as a gauge."""
        if not self.attached:
            return {}
        rows = await engine.job_manager.list_queues_async()
        depth = {row["name"]: {"todo": row["todo"], "doing": row["doing"]} for row in rows}
        for queue, counts in depth.items():
            for status, count in counts.items():
                JOBS_QUEUE_DEPTH.labels(queue, status).set(count)
        return depth

    async def run_worker(
        self,
        state: AppState,
        *,
        concurrency: int | None = None,
        wait: bool = True,
        install_signal_handlers: bool = False,
        name: str | None = None,
        queues: list[str] | None = None,
    ) -> None:
        """Run a worker on queues (None: all) until cancelled (or, with wait=False, idle)."""
        if not self.attached:
            return
        settings = self.settings
        await engine.run_worker_async(
            # None is every queue (procrastinate's own default, which its stub types omit).
            queues=cast("list[str]", queues),
            name=name or "b2bscore",
            concurrency=concurrency or settings.jobs_concurrency,
            wait=wait,
            install_signal_handlers=install_signal_handlers,
            fetch_job_polling_interval=settings.jobs_poll_seconds,
            abort_job_polling_interval=settings.jobs_poll_seconds,
            listen_notify=not self.in_memory,
            delete_jobs="successful",
            shutdown_graceful_timeout=settings.jobs_shutdown_seconds,
            additional_context={_STATE_KEY: state},
            update_heartbeat_interval=settings.jobs_stalled_seconds / 3,
            stalled_worker_timeout=settings.jobs_stalled_seconds,
            worker_middleware=[_observe],
        )

    async def publish_depth_forever(self, interval: float = 15.0) -> None:
        """Refresh the queue-depth gauge every interval seconds (for a worker's /metrics)."""
        while True:
            try:
                await self.queue_depth()
            except Exception as error:  # a scrape must never take the worker down
                log.warning("queue depth unavailable: %s", type(error).__name__)
            await asyncio.sleep(interval)
