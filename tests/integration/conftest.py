"""Fixtures of the integration tests: the embedded broker, and worker processes that are always
stopped (kill -9 as a last resort), whatever the test did."""

from __future__ import annotations

import os
import signal

import pytest

from semwatch.broker import EmbeddedBroker
from tests.support import WorkerProcess


@pytest.fixture
def broker():
    b = EmbeddedBroker().start()
    yield b
    b.stop()


@pytest.fixture
def workers():
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.alive():
            try:
                os.killpg(w.proc.pid, signal.SIGCONT)  # a frozen worker would not stop
            except OSError:
                pass
            w.stop(timeout=20)
        w.kill9()
