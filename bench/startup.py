"""Start-up time: `webhook-service --help`, and a worker's time to its "ready" log lines.

usage: python bench/startup.py [--repeat 15] [--tree DIR ...]

Each `--tree` is a checkout with its own `.venv` (default: this one); with several, their runs are
interleaved round by round, so machine noise hits them alike, and each is printed as a ratio to
the first tree: how docs/benchmarks.md compares a commit before and after a change in one run.
Also printed: the same-run baseline, a bare `python -c pass` of the first tree's interpreter.

The worker (`webhook-service worker`, forking, with RQ's scheduler) gets a PostgreSQL database per
tree, migrated by that tree, and a private Redis started here; the figure is the time from spawn
to its "worker ready" line (older trees have none: "-") and to RQ's "Listening on" line, which
every version prints once it enters its work loop. Each figure is the median of `--repeat` runs.
Beside wall time, the CPU time the process used (user + system, from the kernel's accounting):
on a shared machine the wall time mostly measures the neighbours, the CPU time what we spend.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
PATTERNS = ("worker ready", "Listening on")
STOP_AT = "Listening on"
COLUMNS = ("help", "help cpu", *(f"{p}{kind}" for p in PATTERNS for kind in ("", " cpu")))


_TICK = os.sysconf("SC_CLK_TCK")


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of running `cmd` to its end."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _until_lines(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> dict[str, float]:
    """Seconds from spawning `cmd` to the first output line with each of PATTERNS; then stop it."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer, seen = b"", {}
    try:
        while time.perf_counter() - started < timeout:
            if not selector.select(timeout=1):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                status = proc.wait()
                raise RuntimeError(f"{cmd[0]} exited ({status}) before {STOP_AT!r}:\n{buffer[-2000:]!r}")
            buffer += chunk
            now = time.perf_counter() - started
            for pattern in PATTERNS:
                if pattern not in seen and pattern.encode() in buffer:
                    seen[pattern] = now
                    seen[f"{pattern} cpu"] = _cpu_seconds(proc.pid)
            if STOP_AT in seen:
                return seen
        raise RuntimeError(f"no {STOP_AT!r} within {timeout}s:\n{buffer[-2000:]!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.0f} ms" if samples else "      -   "


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--tree", type=Path, action="append", help="checkout to measure (uses DIR/.venv)")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [REPO])]

    import sqlalchemy as sa

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    databases = [f"bench_startup_{os.getpid()}_{i}" for i in range(len(trees))]
    redis_dir = Path(tempfile.mkdtemp(prefix="bench-startup-redis-"))
    port = _free_port()
    server = shutil.which("redis-server") or "redis-server"
    redis = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
        stdout=subprocess.DEVNULL,
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "STRIPE_"))}
    envs = []
    results: list[dict[str, list[float]]] = [{c: [] for c in COLUMNS} for _ in trees]
    baseline: list[float] = []
    try:
        with admin.connect() as conn:
            for name in databases:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        for tree, name in zip(trees, databases, strict=True):
            url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
            env = {**clean, "DATABASE_URL": url, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
            script = str(tree / ".venv" / "bin" / "webhook-service")
            upgrade = [script, "db", "upgrade"]
            subprocess.run(upgrade, env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL)
            envs.append(env)
        python = str(trees[0] / ".venv" / "bin" / "python")
        for _ in range(args.repeat):
            baseline.append(_timed([python, "-c", "pass"], envs[0], trees[0])[0])
            for tree, env, result in zip(trees, envs, results, strict=True):
                script = str(tree / ".venv" / "bin" / "webhook-service")
                wall, cpu = _timed([script, "--help"], env, tree)
                result["help"].append(wall)
                result["help cpu"].append(cpu)
                for pattern, seconds in _until_lines([script, "worker"], env, tree).items():
                    result[pattern].append(seconds)
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(redis_dir, ignore_errors=True)
        with admin.connect() as conn:
            for name in databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    print(f"repeat: {args.repeat}, interleaved; medians")
    print(f"baseline `python -c pass`: {_median_ms(baseline)}")
    columns = COLUMNS
    print(f"{'':<24}" + "".join(f"{c:>17}" for c in ("--help", "", "worker ready", "", "Listening on", "")))
    print(f"{'tree':<24}" + "".join(f"{k:>17}" for k in ("wall", "cpu") * 3))
    first = results[0]
    for tree, result in zip(trees, results, strict=True):
        print(f"{str(tree)[-23:]:<24}" + "".join(f"{_median_ms(result[c]):>17}" for c in columns))
        if result is not first:
            ratios = []
            for c in columns:
                if result[c] and first[c]:
                    ratios.append(f"{statistics.median(result[c]) / statistics.median(first[c]):>16.2f}x")
                else:
                    ratios.append(f"{'-':>17}")
            print(f"{'  ratio to the first':<24}" + "".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
