"""The RQ integration: our job class in RQ's own workers, and the one RQ internal we replace."""

from __future__ import annotations

from rq import SimpleWorker, Worker
from rq.worker import BaseWorker

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
