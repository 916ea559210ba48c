"""Vendor fakes that enforce the vendors' documented rate limits (layoff tests, bench).

:class:`RateLimitedVendorServer` is :class:`tests.fakes.FakeVendorServer` with a fixed-window
limit in front of each vendor, answered the way each vendor documents it:

* Okta: a limit per endpoint (method + path with ids taken out), every answer carrying
  ``X-Rate-Limit-Limit``, ``X-Rate-Limit-Remaining`` and ``X-Rate-Limit-Reset`` (epoch
  seconds, the end of the window); over the limit, 429 with error ``E0000047`` and the same
  headers (developer.okta.com, "Rate limits").
* Microsoft Graph: a limit for the tenant's app across endpoints; over it, 429
  ``TooManyRequests`` — with ``Retry-After`` only when ``graph_retry_after`` is set, since
  Graph does not always send it (learn.microsoft.com, "Microsoft Graph throttling guidance").
* Google Admin SDK: a limit per user-of-the-API across endpoints; over it, 403
  ``userRateLimitExceeded`` (domain ``usageLimits``), or 429 ``rateLimitExceeded`` when
  ``google_status`` is 429 (developers.google.com, "Directory API: Limits and Quotas").

A client that ignores these signals sees the errors; ``limited`` counts them per vendor.
Requests that pass go to the ordinary fake. Read-backs count against the limits too.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.fakes import (
    FakeVendorServer,
    _google_error,
    _graph_error,
    _okta_error,
    _Request,
    _Response,
)

#: Okta endpoint ids: the segment after users/ (and after factors/, grants/ ...).
_OKTA_ID = re.compile(r"(/api/v1/users/)[^/]+")


@dataclass(frozen=True)
class Limit:
    """``calls`` per ``window`` seconds (fixed windows aligned to the epoch)."""

    calls: int
    window: float = 1.0

    @property
    def rate(self) -> float:
        return self.calls / self.window


class RateLimitedVendorServer(FakeVendorServer):
    """The vendor fake with each vendor's rate limit enforced (see the module)."""

    def __init__(
        self,
        *,
        okta: Limit = Limit(50, 1.0),
        graph: Limit = Limit(40, 1.0),
        google: Limit = Limit(40, 1.0),
        graph_retry_after: float | None = None,
        google_status: int = 403,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.limits = {"okta": okta, "graph": graph, "google": google}
        self.graph_retry_after = graph_retry_after
        self.google_status = google_status
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}
        self._rl_lock = threading.Lock()
        #: Rate-limit refusals sent, per vendor.
        self.limited: Counter[str] = Counter()
        #: Requests let through, per vendor (acting calls and read-backs).
        self.passed: Counter[str] = Counter()
        #: (vendor, bucket, time) of each request let through: throughput per window.
        self.passed_log: list[tuple[str, str, float]] = []

    @staticmethod
    def vendor_of(path: str) -> str | None:
        if path.startswith("/api/v1/"):
            return "okta"
        if path.startswith("/v1.0/"):
            return "graph"
        if path.startswith("/admin/directory/v1/"):
            return "google"
        return None

    def _take(self, vendor: str, bucket: str) -> tuple[bool, int, int, float]:
        """Count one request in its window: (allowed, limit, remaining, reset epoch)."""
        limit = self.limits[vendor]
        now = time.time()
        window = math.floor(now / limit.window)
        reset = (window + 1) * limit.window
        with self._rl_lock:
            seen, used = self._windows.get((vendor, bucket), (window, 0))
            if seen != window:
                used = 0
            allowed = used < limit.calls
            if allowed:
                used += 1
            self._windows[(vendor, bucket)] = (window, used)
            if allowed:
                self.passed[vendor] += 1
                self.passed_log.append((vendor, bucket, now))
            else:
                self.limited[vendor] += 1
        return allowed, limit.calls, limit.calls - used, reset

    def _handle(self, req: _Request) -> _Response:
        vendor = self.vendor_of(req.path)
        if vendor is None or req.path == "/api/v1/logs":
            return super()._handle(req)
        if vendor == "okta":
            endpoint = _OKTA_ID.sub(r"\1{id}", req.path)
            bucket = f"{req.method} {endpoint}"
            allowed, limit, remaining, reset = self._take(vendor, bucket)
            headers = {
                "X-Rate-Limit-Limit": str(limit),
                "X-Rate-Limit-Remaining": str(max(remaining, 0)),
                "X-Rate-Limit-Reset": str(math.ceil(reset)),
            }
            if not allowed:
                refused = _okta_error(
                    429, "E0000047", "API call exceeded rate limit due to too many requests."
                )
                refused.headers.update(headers)
                return refused
            answer = super()._handle(req)
            answer.headers.update(headers)
            return answer
        allowed, _, _, reset = self._take(vendor, "all")
        if allowed:
            return super()._handle(req)
        if vendor == "graph":
            refused = _graph_error(
                429, "TooManyRequests", "Too many requests. Please retry after some time."
            )
            if self.graph_retry_after is not None:
                refused.headers["Retry-After"] = str(self.graph_retry_after)
            return refused
        if self.google_status == 429:
            return _google_error(429, "rateLimitExceeded", "Rate Limit Exceeded")
        refused = _google_error(403, "userRateLimitExceeded", "User Rate Limit Exceeded")
        body = refused.body.replace(b'"domain": "global"', b'"domain": "usageLimits"')
        return _Response(403, body, refused.content_type, refused.headers)

    def allowed_rate(self) -> dict[str, float]:
        """Calls per second each vendor allows (Okta: per endpoint)."""
        return {vendor: limit.rate for vendor, limit in self.limits.items()}

    def utilisation(self) -> dict[str, dict[str, float]]:
        """Per vendor and bucket: requests let through, the seconds from the first to the
        last, and their rate as a share of the allowed rate over those seconds."""
        spans: dict[tuple[str, str], list[float]] = {}
        with self._rl_lock:
            for vendor, bucket, at in self.passed_log:
                spans.setdefault((vendor, bucket), []).append(at)
        out: dict[str, dict[str, float]] = {}
        for (vendor, bucket), times in sorted(spans.items()):
            limit = self.limits[vendor]
            # whole windows from the first to the last request: what the limit allowed
            windows = math.floor(max(times) / limit.window) - math.floor(min(times) / limit.window)
            allowed = (windows + 1) * limit.calls
            out[f"{vendor} {bucket}"] = {
                "requests": len(times),
                "seconds": max(times) - min(times),
                "share_of_allowed": len(times) / allowed,
            }
        return out
