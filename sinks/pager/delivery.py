"""HTTP delivery of one page: a JSON POST retried until the target takes it or refuses it.

Retried, with capped exponential backoff and jitter: 5xx, 408, 429 (honouring ``Retry-After``),
timeouts and connection errors, for as long as it takes (a page is never given up: an outage of
the target delays it, and the pager's backlog metrics say so). Any other 4xx is a permanent
rejection (the response body is logged), and so is a redirect: a POST that is redirected means a
misconfigured URL. Best-effort requests (re-sending open alerts) pass ``attempts`` to stop early.

Standard library only (urllib in a small thread pool) rather than aiohttp: the pager sends a
handful of requests a minute, so a thread per request costs nothing, and semwatch takes no direct
dependency on aiohttp (it only arrives with Faust, which the pager does not use).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

from sinks.pager.metrics import PagerMetrics

log = logging.getLogger("semwatch.pager")

RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
MAX_LOGGED_BODY = 2000


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 10.0  # one request
    backoff_base_s: float = 0.5  # first retry delay, doubled per attempt
    backoff_max_s: float = 30.0  # the cap: how late a recovered target is noticed, at worst

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.backoff_base_s < 0 or self.backoff_max_s <= 0:
            raise ValueError("timeout and backoff must be positive")

    def backoff(self, attempt: int, rng: random.Random, retry_after: Optional[float] = None) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries of many
        pagers spread out but never hammer back at once. A server's Retry-After wins (capped)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class Delivery:
    outcome: str  # delivered | rejected | failed (only when ``attempts`` ran out)
    attempts: int
    status: Optional[int] = None
    detail: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect of a POST is a misconfigured URL: report it (as a rejected page) instead of
    # urllib silently turning it into a GET.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


class HttpSender:
    """POSTs JSON with retries. Requests are bounded by their socket timeout, so a hung target
    holds a thread at most ``timeout_s``."""

    def __init__(self, metrics: PagerMetrics, policy: RetryPolicy = RetryPolicy(), *, max_workers: int = 8,
                 rng: Optional[random.Random] = None, user_agent: str = "semwatch-pager"):
        self.metrics = metrics
        self.policy = policy
        self.rng = rng or random.Random()
        self.user_agent = user_agent
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="semwatch-pager-http")
        self._opener = urllib.request.build_opener(_NoRedirect())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _post(self, url: str, body: bytes, timeout: float) -> tuple[Optional[int], str, Optional[str], str]:
        """One request (in a worker thread): (status, body, Retry-After, error)."""
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json", "User-Agent": self.user_agent})
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read(64 * 1024).decode("utf-8", "replace"), None, ""
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read(64 * 1024).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            return exc.code, text, exc.headers.get("Retry-After") if exc.headers else None, ""
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, "", None, f"{type(reason).__name__}: {reason}"

    async def post_json(self, target: str, url: str, payload: Any, *, attempts: Optional[int] = None) -> Delivery:
        """POST until delivered or rejected; with ``attempts``, give up (outcome ``failed``) after
        that many. Cancelling the task is the only other way out."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        policy, loop = self.policy, asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            self.metrics.attempts.labels(target).inc()
            try:
                status, text, retry_after, error = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._post, url, body, policy.timeout_s),
                    policy.timeout_s + 5)
            except asyncio.TimeoutError:  # belt and braces: the socket timeout should fire first
                status, text, retry_after, error = None, "", None, f"no answer within {policy.timeout_s:.1f}s"
            if status is not None and 200 <= status < 300:
                self.metrics.last_success.labels(target).set(time.time())
                return Delivery("delivered", attempt, status)
            retryable = status is None or status >= 500 or status in RETRY_STATUSES
            what = error or f"HTTP {status}"
            if not retryable:
                log.error("%s rejected the request (%s, not retried): %s", target, what,
                          text[:MAX_LOGGED_BODY] or "(empty body)")
                return Delivery("rejected", attempt, status, text[:MAX_LOGGED_BODY])
            if attempts is not None and attempt >= attempts:
                log.warning("%s: %s after %d attempt(s) %s", target, what, attempt, text[:MAX_LOGGED_BODY])
                return Delivery("failed", attempt, status, error or text[:MAX_LOGGED_BODY])
            delay = policy.backoff(attempt, self.rng, _retry_after(retry_after))
            log.warning("%s: attempt %d failed (%s); retrying in %.2fs", target, attempt, what, delay)
            await asyncio.sleep(delay)


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
