"""The RQ integration: our job class in RQ's own workers, and the one RQ internal we replace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from rq import SimpleWorker, Worker
from rq.worker import BaseWorker

from tests.test_startup import _clean_env
from webhook_service.workers import AppJob, _ThreadWorker, build_worker


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


@pytest.mark.process
@pytest.mark.parametrize("fork", [True, False], ids=["forking", "no-fork"])
def test_an_idle_worker_exits_on_sigterm(postgresql_database_url, redis_url, tmp_path, fork):
    """SIGTERM to a worker waiting for jobs ends it at once, with 0 (not a restart of RQ's loop)."""
    env = _clean_env(DATABASE_URL=postgresql_database_url, REDIS_URL=redis_url)
    argv = [sys.executable, "-m", "webhook_service.cli", "worker", *([] if fork else ["--no-fork"])]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # its ready line: checks passed, RQ's loop about to start
            if '"worker ready"' in line:
                break
        time.sleep(1.0)  # into RQ's wait for a job
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0, rest
    assert "starting again" not in rest and "warm shut down requested" in rest, rest
