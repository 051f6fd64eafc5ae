"""A private PostgreSQL cluster for the connector tests and benchmarks.

``PgServer.start()`` runs ``initdb`` and ``pg_ctl`` on a fresh temporary
directory and a free TCP port, configured for what the connectors need
(``wal_level=logical``, prepared transactions, replication slots), with a
password for the superuser so wrong credentials can be tested. ``initdb``
refuses to run as root, so as root the cluster runs as the ``postgres``
system user (``runuser``). The binaries come from ``$LJ_PG_BINDIR``, else
``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``.

``tests/test_postgres.py`` uses it through a fixture; ``benchmarks/bench_postgres.py``
loads this file by path, so both start servers the same way.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "lj-test-secret-9f3"
USER = "postgres"

CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
wal_level = logical
max_prepared_transactions = 16
max_replication_slots = 8
max_wal_senders = 8
shared_buffers = 128MB
max_wal_size = 2GB
logging_collector = off
"""


def _knows_setting(bindir: Path, name: str) -> bool:
    """Whether this server version has configuration parameter ``name`` (an unknown one stops it starting)."""
    out = subprocess.run([str(bindir / "postgres"), "--describe-config"], capture_output=True, text=True)
    return any(line.split("\t", 1)[0] == name for line in out.stdout.splitlines())


def _bindir() -> Path | None:
    env = os.environ.get("LJ_PG_BINDIR")
    if env:
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A running private cluster; ``dsn`` connects as the superuser with its password."""

    def __init__(self, root: Path, bindir: Path, port: int, as_user: list[str]):
        self.root, self.bindir, self.port, self._as_user = root, bindir, port, as_user
        self.data = root / "data"
        self.log = root / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def dsn_with(self, **parts) -> str:
        """The DSN with some parts replaced (user, password, port, dbname)."""
        p = {"user": USER, "password": PASSWORD, "port": self.port, "dbname": "postgres", **parts}
        return f"postgresql://{p['user']}:{p['password']}@127.0.0.1:{p['port']}/{p['dbname']}"

    def _run(self, *args, check=True, timeout=120):
        proc = subprocess.run([*self._as_user, *map(str, args)], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                               f"{self.log.read_text()[-2000:] if self.log.exists() else ''}")
        return proc

    @classmethod
    def start(cls) -> "PgServer":
        """initdb + start on a free port; raises RuntimeError saying why when that is impossible."""
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) found; install postgresql "
                               "(Debian: apt-get install -y postgresql) or set LJ_PG_BINDIR")
        root = Path(tempfile.mkdtemp(prefix="lj-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres system user
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root and no runuser to start PostgreSQL as the postgres user")
            as_user = [runuser, "-u", "postgres", "--"]
            os.chmod(root, 0o755)
            shutil.chown(root, "postgres", "postgres")
        server = cls(root, bindir, _free_port(), as_user)
        pwfile = root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        server._run(bindir / "initdb", "-D", server.data, "-U", USER, "--pwfile", pwfile, "--auth-local=trust",
                    "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        with open(server.data / "postgresql.conf", "a") as f:
            f.write(CONFIG.format(port=server.port, socket_dir=root))
            if _knows_setting(bindir, "output_plugin_libraries"):  # 15.20 on: replication users name listed plugins
                f.write("output_plugin_libraries = 'pgoutput, test_decoding, wal2json'\n")
        server.start_again()
        return server

    def start_again(self) -> None:
        """Start the (stopped) server and wait until it accepts connections."""
        if self._as_user:
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast, immediate)."""
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start_again()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._run(self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", self.port, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")
