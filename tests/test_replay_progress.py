"""On a terminal, a replay shows a progress bar with an ETA (issue 16); elsewhere plain lines.

Both on a real pseudo-terminal: click draws its bar only when stdout is a terminal.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from tests.conftest import SECRET, StripeSender
from tests.helpers import event_rows
from webhook_service.cli_support import follow

ETA = re.compile(r"\d{2}:\d{2}:\d{2}")  # click's ETA field


def _read_all(fd: int, until: float) -> str:
    out = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_follow_draws_a_bar_with_an_eta_on_a_terminal(monkeypatch):
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", terminal)
    progress = {"done": 0}

    def step():  # four units of work of 0.4 s: click estimates once a second has passed
        time.sleep(0.4)
        progress["done"] += 1

    try:
        finished = follow(4, lambda: progress["done"], label="replaying", step=step)
    finally:
        terminal.flush()
        monkeypatch.undo()
        terminal.close()
    shown = _read_all(master, time.monotonic() + 2)
    os.close(master)
    assert finished == 4
    assert "replaying" in shown and "[" in shown and "4/4" in shown, shown
    unfinished = [frame for frame in re.split(r"[\r\n]", shown) if "/4" in frame and "4/4" not in frame]
    assert any(ETA.search(frame) for frame in unfinished), shown  # an ETA while it was running


def test_follow_prints_lines_with_a_rate_off_a_terminal(capsys):
    progress = {"done": 0}

    def step():
        time.sleep(0.05)
        progress["done"] += 1

    assert follow(3, lambda: progress["done"], label="replaying", step=step) == 3
    assert "replaying: 3/3 (" in capsys.readouterr().out


@pytest.mark.process
@pytest.mark.parametrize("config_overrides", [{"retry_intervals": ()}])
def test_replay_on_a_terminal_shows_the_bar(app, client, fixture_events, database_url, config_overrides):
    # GIVEN failed events (the log says failed, as a bad deploy leaves them)
    stripe = StripeSender(client)
    for event in fixture_events:
        assert stripe.post(event).status_code == 200
    from webhook_service.processing import drain
    from webhook_service.web.services import get_services

    services = get_services(app)
    drain.drain(services.db, services.queue, batch_size=500)
    with services.db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stripe_events SET status = 'failed' WHERE status = 'processed'")
    failed = [i for i, row in event_rows(app).items() if row.status == "failed"]
    assert failed
    # WHEN an operator replays them from a terminal (no Redis: the CLI drains them itself)
    master, slave = pty.openpty()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("SENTRY_DSN", "REDIS_URL")},
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRETS": SECRET,
        "LOG_LEVEL": "WARNING",
        "DRAIN_BATCH_SIZE": "1",
        "COLUMNS": "100",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook_service.cli", "replay", "--failed"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    shown = _read_all(master, time.monotonic() + 120)
    os.close(master)
    # THEN it drew a bar up to every event, and the events were processed
    assert process.wait(timeout=30) == 0, shown
    total = len(failed)
    assert re.search(rf"replaying\s+\[[#\-\s]*\]\s+{total}/{total}", shown), shown
    assert f"Replay finished: {total} processed." in shown, shown
    assert {event_rows(app)[i].status for i in failed} == {"processed"}
