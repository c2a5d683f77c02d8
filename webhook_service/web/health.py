"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint
from rq.registry import FailedJobRegistry

from webhook_service.processing import backlog, pause
from webhook_service.web import error_handlers, rejections
from webhook_service.web.services import get_services

bp = Blueprint("health", __name__)
#: What /readyz says instead of a Redis check when REDIS_URL is unset: that queue is not Redis.
EMBEDDED_QUEUE = "embedded (in-process queue, development only; not Redis)"


@bp.get("/healthz")
def healthz():
    """The process is alive; checks nothing else."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
def readyz():
    """Redis and the database are reachable; 503 names whichever is not."""
    services = get_services()
    checks = {}
    probes = [("database", services.db.ping)]
    if services.queue.embedded:
        checks["queue"] = EMBEDDED_QUEUE
    else:
        probes.append(("redis", services.queue.ping))
    for name, probe in probes:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the type says which
            checks[name] = f"unavailable ({type(exc).__name__})"
    if checks["database"] == "ok":
        try:
            checks["schema"] = services.db.schema_problem() or "ok"
        except Exception as exc:  # noqa: BLE001 - reported as the check's outcome
            checks["schema"] = f"unknown ({type(exc).__name__})"
    down = [name for name, value in checks.items() if value not in ("ok", EMBEDDED_QUEUE)]
    ready = not down
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    if checks.get("redis") == "ok" or services.queue.embedded:
        queue = services.queue.queue
        body["queue"] = {"depth": queue.count, "failed_jobs": FailedJobRegistry(queue=queue).count}
    if checks["database"] == "ok":
        rejections.tally().flush(services.db)  # this process's latest rejections count at once
        with services.db.sessions() as session:
            owed = backlog.read(session)
            signatures = rejections.signature_health(session, bool(services.config.webhook_secrets))
        body["events"] = {"pending": owed.queued + owed.retrying, "failed": owed.failed}
        # Paused is still ready: the receiver keeps recording; drains wait for `resume`.
        body["processing"] = pause.get_state(services.db).as_dict()
        # Reported, not a 503: taking the receiver out of a load balancer would refuse the deliveries
        # that do verify as well, and a restart with the right secrets is what fixes it.
        body["webhook_signatures"] = signatures
        if signatures["status"] != "ok":
            body["warnings"] = [signatures["message"]]
    errors = error_handlers.recent_internal_errors()
    if errors:  # a bad deploy shows here at once: the last 500s of this process
        body["recent_errors"] = errors
    if not ready:
        body["message"] = f"Not ready: {', '.join(down)} unreachable."
        if "schema" in down:
            body["message"] = f"Not ready: {', '.join(down)} unavailable or wrong ({checks['schema']})."
    return body, 200 if ready else 503
