"""A private PgBouncer in transaction pooling mode, in front of the test PostgreSQL.

What Heroku, Supabase, Neon and RDS Proxy put in front of PostgreSQL: every transaction may run on
a different server connection, and (1.18, Debian's) named prepared statements do not survive.
Each test run starts its own on a free port, as it does Redis, so drills can restart it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

#: PgBouncer refuses to run as root; it switches to this user (the machine's PostgreSQL owner).
RUN_AS = "postgres"


def pgbouncer_binary() -> str:
    """The pgbouncer executable (Debian puts it in /usr/sbin, often not on a non-root PATH)."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if found is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer; .ci/run does it)")
    return found


class PgBouncer:
    """`pgbouncer` on 127.0.0.1:<port>, transaction pooling, trust auth for the given users."""

    def __init__(self, directory: Path, port: int, target_host: str, target_port: int, users: list[str]):
        self.dir = directory
        self.port = port
        self.target = (target_host, target_port)
        self.users = users
        self.proc: subprocess.Popen | None = None

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        users = self.dir / "users.txt"
        users.write_text("".join(f'"{user}" ""\n' for user in self.users))
        ini = self.dir / "pgbouncer.ini"
        host, port = self.target
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\n"
            "pool_mode = transaction\n"
            f"admin_users = {self.users[0]}\n"
            # Clients may send these at startup; 1.18 refuses unknown ones and passes none on.
            "ignore_startup_parameters = extra_float_digits,options\n"
            "default_pool_size = 20\nmax_client_conn = 500\n"
            # A server connection that was cut is noticed before it is handed to a client.
            "server_check_delay = 0\n"
            f"logfile =\npidfile =\n{'user = ' + RUN_AS if os.geteuid() == 0 else ''}\n"
        )
        if os.geteuid() == 0:  # the switched-to user must read its config
            uid = pwd.getpwnam(RUN_AS).pw_uid
            for path in (self.dir, users, ini):
                os.chown(path, uid, -1)
        return ini

    def start(self) -> None:
        ini = self._write_config()
        log = open(self.dir / "pgbouncer.log", "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen([pgbouncer_binary(), str(ini)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {(self.dir / 'pgbouncer.log').read_text()[-2000:]}")
            try:
                admin = {"dbname": "pgbouncer", "user": self.users[0], "connect_timeout": 1}
                psycopg.connect(host="127.0.0.1", port=self.port, **admin).close()
                return
            except psycopg.Error:
                time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        """Kill and start again: every client and server connection is dropped."""
        self.stop()
        self.start()
