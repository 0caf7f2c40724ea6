"""Start, find and stop the local services as detached processes with pid files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from infra.errors import StackError


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file`` if that process is still alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie (exited, not yet reaped by its parent) counts as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return None
    except (FileNotFoundError, IndexError):
        pass
    return pid


def start_detached(
    argv: Sequence[str], log_file: Path, pid_file: Path, env: dict | None = None, cwd: Path | None = None
) -> int:
    """Run ``argv`` in its own session (so it outlives the CLI), output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop_process(pid_file: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the process group recorded in ``pid_file``, SIGKILL after ``timeout``. True if one ran."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_pid(pid_file) is not None:
        time.sleep(0.2)
    if read_pid(pid_file) is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
    pid_file.unlink(missing_ok=True)
    return True


def log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    pid_file: Path | None = None,
    log_file: Path | None = None,
    fix: str = "",
) -> None:
    """Poll ``ready`` until it is true; fail early if the process died, with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid_file is not None and read_pid(pid_file) is None:
            tail = log_tail(log_file) if log_file else ""
            raise StackError(f"{what} exited during start-up. Last lines of {log_file}:\n{tail}", fix)
        time.sleep(0.5)
    tail = f" Last lines of {log_file}:\n{log_tail(log_file)}" if log_file else ""
    raise StackError(f"{what} did not answer within {timeout:.0f} s.{tail}", fix)


def require_free_port(host: str, port: int, what: str, env_var: str) -> None:
    """Fail with a clear message when a port we are about to bind is taken by someone else."""
    if port_open(host, port):
        raise StackError(
            f"{what}: port {port} on {host} is already in use by another process.",
            f"stop that process, or choose another port with {env_var}=<port>",
        )
