"""Fixtures shared by the pager's tests (tests/test_pager*.py)."""

from __future__ import annotations

import pytest
from support import Receiver

from sinks.pager.metrics import PagerMetrics


@pytest.fixture
def receiver():
    """A recording HTTP server for Alertmanager's and PagerDuty's paths (tests/support.py)."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def metrics():
    """The pager's metrics in a private registry, both targets' series at zero."""
    return PagerMetrics(targets=["alertmanager", "pagerduty"])
