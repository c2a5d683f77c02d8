"""The RQ integration: our job class in RQ's own workers, and the one RQ internal we replace."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.worker import BaseWorker

from tests.test_startup import _clean_env
from webhook_service.web.services import get_services
from webhook_service.workers import AppCronScheduler, AppJob, _ThreadWorker, build_worker, stop_requested


def test_workers_are_rqs_own_classes_with_our_job_class(app):
    for forking, cls in ((True, Worker), (False, SimpleWorker)):
        worker = build_worker(app, forking=forking)
        assert isinstance(worker, cls)
        # No subclass overriding RQ's private methods: only the public `heartbeat` is extended.
        for klass in type(worker).__mro__[: type(worker).__mro__.index(cls)]:
            assert {name for name in vars(klass) if not name.startswith("__")} <= {
                "heartbeat",
                "db_heartbeat",
            }
        assert issubclass(worker.job_class, AppJob) and worker.job_class.app is app


def test_the_embedded_workers_signal_hook_still_exists_in_rq():
    """The dev-only thread worker replaces RQ's `_install_signal_handlers`; if RQ renames it, the
    override would silently stop applying and `serve` would crash on `signal` in a thread."""
    assert "_install_signal_handlers" in vars(BaseWorker)
    assert "_install_signal_handlers" in vars(_ThreadWorker)


def test_rqs_stop_flag_still_exists(app):
    """The worker command restarts RQ's loop unless a stop was requested, read from this flag."""
    from webhook_service.workers import stop_requested

    worker = build_worker(app, forking=False)
    assert "_stop_requested" in vars(worker) and stop_requested(worker) is False
    worker._stop_requested = True
    assert stop_requested(worker) is True


def test_rqs_shutdown_date_still_exists(app):
    """RQ notes every warm stop, idle ones too, in this attribute (its stop flag is set mid-job only)."""
    from webhook_service.workers import stop_requested

    worker = build_worker(app, forking=False)
    assert "_shutdown_requested_date" in vars(worker) and stop_requested(worker) is False
    worker._shutdown_requested_date = datetime.now(UTC)
    assert stop_requested(worker) is True


@contextlib.contextmanager
def _sigterm_while_a_connection_is_reset(app):
    """Send this process SIGTERM from inside SQLAlchemy's pool reset (of the next connection
    returned), as a deploy's signal can land; the handlers in place are restored afterwards."""
    engine = get_services(app).db.engine
    sent: list[bool] = []

    def sigterm_during_reset(*_args):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler right here, mid-reset

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    sa.event.listen(engine.pool, "reset", sigterm_during_reset)
    try:
        yield
    finally:
        sa.event.remove(engine.pool, "reset", sigterm_during_reset)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert sent, "the database beat never returned a connection to the pool"


@pytest.mark.parametrize("fork", [True, False], ids=["forking", "no-fork"])
def test_a_stop_arriving_during_the_database_beat_still_stops_the_worker(app, fork):
    """RQ's SIGTERM handler raises StopRequested wherever the idle loop is; SQLAlchemy's pool logs
    and swallows an exception raised while it resets a connection. A SIGTERM that landed there was
    lost: the worker blocked on Redis again and outlived its grace period (the one path we found
    to the idle-worker hang a CI run saw in the test below)."""
    worker = build_worker(app, forking=fork)
    with _sigterm_while_a_connection_is_reset(app):
        worker._install_signal_handlers()
        worker.set_state("idle")
        with pytest.raises(StopRequested):
            worker.heartbeat()
    assert stop_requested(worker)


def test_a_stop_arriving_during_the_database_beat_still_stops_the_scheduler(app):
    """The same for RQ's cron loop, whose handler raises StopRequested too: the lease is given up
    at once rather than left to lapse after the process is killed."""
    services = get_services(app)
    queue = services.queue
    cron = AppCronScheduler(services.db, connection=queue.connection, queue_name=services.config.queue_name)
    with _sigterm_while_a_connection_is_reset(app):
        cron._install_signal_handlers()
        with pytest.raises(StopRequested):
            cron.heartbeat()


def test_stop_signals_outside_the_main_thread_are_left_alone(app):
    """The embedded dev worker beats from a thread, where signal handlers cannot be set."""
    from webhook_service.workers import stop_signals_deferred

    errors: list[BaseException] = []

    def in_a_thread():
        try:
            with stop_signals_deferred():
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert errors == []


@pytest.mark.process
@pytest.mark.parametrize("fork", [True, False], ids=["forking", "no-fork"])
def test_an_idle_worker_exits_on_sigterm(postgresql_database_url, redis_url, tmp_path, fork):
    """SIGTERM to a worker waiting for jobs ends it at once, with 0 (not a restart of RQ's loop)."""
    env = _clean_env(DATABASE_URL=postgresql_database_url, REDIS_URL=redis_url, PYTHONFAULTHANDLER="1")
    argv = [sys.executable, "-m", "webhook_service.cli", "worker", *([] if fork else ["--no-fork"])]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    rest: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # its ready line: checks passed, RQ's loop about to start
            if '"worker ready"' in line:
                break
        drain = threading.Thread(target=lambda: rest.extend(proc.stderr), daemon=True)
        drain.start()  # a full pipe must not be what holds the worker
        time.sleep(1.0)  # into RQ's wait for a job
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread stood
            proc.wait(timeout=10)
            drain.join(timeout=5)
            pytest.fail("the worker outlived SIGTERM by 15 s:\n" + "".join(rest))
        drain.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    output = "".join(rest)
    assert code == 0, output
    assert "starting again" not in output and "warm shut down requested" in output, output
