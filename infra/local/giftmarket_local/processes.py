"""Background processes tracked by PID file: start once, stop by the PID we recorded."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("giftmarket.stack")


class ProcessError(RuntimeError):
    """A managed process failed to start, become ready, or stop."""


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _age(pid: int) -> float:
    """Seconds since the process started (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return 0.0
    # Field 22, the start time in clock ticks since boot, counted after the command name.
    started = int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, uptime - started)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@dataclass
class ManagedProcess:
    """One long-running server whose PID lives in a file beside its log.

    The PID file is the only handle used to stop it, and a PID is trusted only while
    /proc/<pid>/cmdline still shows our program, so a recycled PID is never signalled.
    """

    name: str
    argv: Sequence[str]
    run_dir: Path
    log_dir: Path
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    marker: str = ""  # a substring of the command line that identifies our process
    port: int | None = None  # checked free before starting: a clear error beats a server log
    ready_timeout: float = 60.0
    stop_timeout: float = 30.0
    folders: Sequence[Path] = ()  # made, if missing, before each start

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of our live process, or None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        marker = self.marker or Path(self.argv[0]).name
        if marker in _cmdline(pid) and not _is_zombie(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> bool:
        """Start the process unless it already runs; wait until ready. True if we started it."""
        if self.is_running():
            self._wait_ready()
            return False
        if self.port is not None and port_open("127.0.0.1", self.port):
            raise ProcessError(
                f"{self.name}: port {self.port} is already used by another process; stop it or"
                " choose another port (GM_<PROFILE>_<SERVICE>_PORT, e.g. GM_RUN_PRIMARY_PORT)"
            )
        for folder in (self.run_dir, self.log_dir, *self.folders):
            folder.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                # Own session: a Ctrl-C in the terminal reaches the supervisor only, which then
                # stops every server in order instead of all of them dying at once.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        self._wait_ready(proc)
        return True

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ProcessError(
                    f"{self.name} exited with code {proc.returncode}; see {self.log_file}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        raise ProcessError(
            f"{self.name} not ready after {self.ready_timeout:.0f}s; see {self.log_file}"
        )

    def stop(self, *, answering: bool = False) -> bool:
        """SIGTERM our process and wait for it to exit; if it has not after `stop_timeout`,
        SIGKILL it (and say so). True if there was a process to stop.

        A process still starting (a stop asked for during start-up) is first given the rest
        of its `ready_timeout` to become ready: mariadbd sent SIGTERM before it is ready
        wedges (its log ends at "Server socket created", and it neither answers nor exits).
        A caller that has just had an answer from it says so (`answering`): it is past
        start-up, though it may never be `ready()` as this stack means it (a server left
        running without TLS), and waiting for that would only wait out `ready_timeout`."""
        pid = self.pid()
        if pid is None:
            return False
        if not answering:
            self._let_it_finish_starting(pid)
        os.kill(pid, signal.SIGTERM)
        if not self._exited(pid, self.stop_timeout):
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0fs; killing it",
                self.name,
                pid,
                self.stop_timeout,
            )
            os.kill(pid, signal.SIGKILL)
            if not self._exited(pid, 10):
                raise ProcessError(f"{self.name} (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        return True

    def _let_it_finish_starting(self, pid: int) -> None:
        deadline = time.monotonic() + self.ready_timeout - _age(pid)
        if time.monotonic() >= deadline:
            return  # long started: ready or not, SIGTERM is what it gets
        while time.monotonic() < deadline and not self.ready():
            if _is_zombie(pid) or not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)

    def kill(self) -> bool:
        """SIGKILL our process (a crash: no shutdown code runs) and wait until it is gone.
        True if there was a process to kill."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        if not self._exited(pid, 10):
            raise ProcessError(f"{self.name} (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _exited(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Reap it when it is our child; otherwise wait for it to vanish.
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if _is_zombie(pid) or not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.05)
        return False
