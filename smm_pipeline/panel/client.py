"""The API v2 client: one `PanelClient` per panel, thread-safe, sync.

Every request goes through the panel's process-wide limiter (rate budget and concurrency cap).
Read-only actions retry with exponential backoff and jitter, honouring Retry-After (on 429 and
on any 5xx that carries it). Writing actions (`add`, `refill`, `cancel`) are resent only when
the request provably never left this machine (connection refused) or the panel said it did not
process it (429); any other failure after sending is an `AmbiguousSubmissionError`, never
retried. A key the panel echoes in its answer is replaced by `***` before the answer is read.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

import httpx

from smm_pipeline.config import PanelConfig, Secret
from smm_pipeline.panel import parsing
from smm_pipeline.panel.errors import (
    AmbiguousSubmissionError,
    APIError,
    HTTPStatusError,
    InsufficientFundsError,
    InvalidResponseError,
    PanelError,
    RateLimitedError,
    TransportError,
)
from smm_pipeline.panel.models import (
    Balance,
    CancelResult,
    OrderStatus,
    RefillResult,
    RefillStatus,
    Service,
)
from smm_pipeline.panel.ratelimit import PanelLimiter, limiter_for

log = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 100
READ_ACTIONS = frozenset({"services", "status", "refill_status", "balance"})
WRITE_ACTIONS = frozenset({"add", "refill", "cancel"})
_MAX_BACKOFF_SECONDS = 30.0

T = TypeVar("T")
R = TypeVar("R")


def chunked(ids: Sequence[T], size: int = MAX_IDS_PER_CALL) -> list[list[T]]:
    """Split ids into lists of at most `size`, keeping order."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def _unique(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in ids))


class PanelClient:
    """A client for one panel. Safe to share between threads."""

    def __init__(
        self,
        panel: PanelConfig,
        key: Secret,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 0.5,
    ) -> None:
        if not isinstance(key, Secret):
            raise TypeError("key must be a config.Secret")
        self.panel = panel
        self._key = key
        self._sleep = sleep
        self._backoff_base = backoff_base
        self.limiter: PanelLimiter = limiter_for(
            panel.name, panel.rate_limit_per_minute, panel.max_concurrency
        )
        self._http = httpx.Client(
            timeout=httpx.Timeout(panel.timeout_seconds, connect=min(10.0, panel.timeout_seconds)),
            follow_redirects=False,
            verify=True,
            headers={"User-Agent": panel.user_agent, "Accept": "application/json"},
            limits=httpx.Limits(
                max_connections=panel.max_concurrency,
                max_keepalive_connections=panel.max_concurrency,
            ),
            transport=transport,
        )
        self._counter_lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"PanelClient(panel={self.panel.name!r}, url={self.panel.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PanelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total_calls(self) -> int:
        with self._counter_lock:
            return sum(self.calls.values())

    # ------------------------------------------------------------------ transport

    def _error(self, cls: type[PanelError], message: str, action: str, **kw: Any) -> PanelError:
        return cls(message, panel=self.panel.name, action=action, **kw)

    def _send_once(self, action: str, params: Mapping[str, str]) -> Any:
        """One POST. Returns the decoded JSON body or raises a PanelError subclass."""
        data = {"key": self._key.reveal(), "action": action, **params}
        with self.limiter.slot():
            with self._counter_lock:
                self.calls[action] += 1
            try:
                response = self._http.post(self.panel.url, data=data)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise self._error(
                    TransportError, f"could not connect ({type(exc).__name__})", action, sent=False
                ) from None
            except httpx.TimeoutException as exc:
                raise self._error(
                    TransportError, f"no answer in time ({type(exc).__name__})", action, sent=True
                ) from None
            except httpx.TransportError as exc:
                raise self._error(
                    TransportError, f"connection failed ({type(exc).__name__})", action, sent=True
                ) from None
        return self._decode(action, response)

    def _decode(self, action: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 429:
            raise self._error(
                RateLimitedError,
                "rate limited (HTTP 429)",
                action,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if 300 <= status < 400:
            raise self._error(
                HTTPStatusError,
                f"redirected (HTTP {status}); redirects are never followed because the key "
                "travels in the body: fix the panel url",
                action,
                status_code=status,
            )
        text = response.text
        try:
            body = _redacted(parsing.decode_json(text), self._key.reveal())
        except ValueError:
            body = None
        message = parsing.lone_error(body) if body is not None else None
        if status >= 400:
            if message is not None and status < 500:
                raise self._api_error(message, action)
            detail = f": {message}" if message else ""
            raise self._error(
                HTTPStatusError,
                f"HTTP {status}{detail}",
                action,
                status_code=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if body is None:
            looks_html = text.lstrip()[:1] == "<"
            what = "an HTML page" if looks_html else "invalid or truncated JSON"
            raise self._error(InvalidResponseError, f"answered {what} (HTTP {status})", action)
        if message is not None:
            raise self._api_error(message, action)
        return body

    def _api_error(self, message: str, action: str) -> APIError:
        cls = InsufficientFundsError if "not enough funds" in message.lower() else APIError
        return cls(message, panel=self.panel.name, action=action)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 300.0)
        delay = min(_MAX_BACKOFF_SECONDS, self._backoff_base * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    def request(self, action: str, params: Mapping[str, str] | None = None) -> Any:
        """POST one action; retries per the action's safety. Returns the decoded JSON."""
        params = dict(params or {})
        writing = action in WRITE_ACTIONS
        attempt = 0
        while True:
            try:
                return self._send_once(action, params)
            except RateLimitedError as exc:
                # The panel refused without processing: safe to retry, for writes too.
                wait = self._backoff(attempt, exc.retry_after)
                self.limiter.back_off(wait)
                error: PanelError = exc
            except TransportError as exc:
                if writing and exc.sent:
                    raise AmbiguousSubmissionError(
                        exc, panel=self.panel.name, action=action
                    ) from None
                error, wait = exc, self._backoff(attempt, None)
            except HTTPStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in (408,):
                    raise
                if writing:
                    raise AmbiguousSubmissionError(
                        exc, panel=self.panel.name, action=action
                    ) from None
                error, wait = exc, self._backoff(attempt, exc.retry_after)
                if exc.retry_after is not None:  # e.g. 503 "come back in N seconds"
                    self.limiter.back_off(wait)
            except InvalidResponseError as exc:
                if writing:
                    raise AmbiguousSubmissionError(
                        exc, panel=self.panel.name, action=action
                    ) from None
                error, wait = exc, self._backoff(attempt, None)
            if attempt >= self.panel.max_retries:
                raise error
            attempt += 1
            log.warning(
                "panel %s %s: %s; retry %d/%d in %.1fs",
                self.panel.name,
                action,
                error.message,
                attempt,
                self.panel.max_retries,
                wait,
            )
            self._sleep(wait)

    def _parsed(self, action: str, params: Mapping[str, str], parse: Callable[[Any], R]) -> R:
        body = self.request(action, params)
        try:
            return parse(body)
        except parsing.ShapeError as exc:
            error = self._error(InvalidResponseError, f"unexpected answer: {exc}", action)
            if action in WRITE_ACTIONS:
                raise AmbiguousSubmissionError(
                    error, panel=self.panel.name, action=action
                ) from None
            raise error from None

    def map_concurrent(
        self, fn: Callable[[T], R], items: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Run `fn` over items with at most `max_concurrency` in flight (the limiter still
        governs each request). Yields (item, result or exception) as they finish."""
        items = list(items)
        if not items:
            return
        workers = min(self.panel.max_concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="panel") as pool:
            futures = {pool.submit(fn, item): item for item in items}
            for future in as_completed(futures):
                exc = future.exception()
                yield futures[future], (exc if exc is not None else future.result())

    # ------------------------------------------------------------------ read-only actions

    def services(self) -> list[Service]:
        return self._parsed("services", {}, parsing.parse_services)

    def balance(self) -> Balance:
        return self._parsed("balance", {}, parsing.parse_balance)

    def status(self, order_id: int) -> OrderStatus:
        """One order's status (single form). A lone `{"error"}` raises APIError."""
        oid = int(order_id)
        return self._parsed(
            "status", {"order": str(oid)}, lambda b: parsing.parse_order_status(oid, b)
        )

    def statuses(self, order_ids: Iterable[int]) -> dict[int, OrderStatus]:
        """Many orders' statuses, 100 ids a call, chunks in parallel; per-item errors as data."""
        ids = _unique(order_ids)

        def one(chunk: list[int]) -> dict[int, OrderStatus]:
            return self._parsed(
                "status",
                {"orders": ",".join(map(str, chunk))},
                lambda b: parsing.parse_multi_status(chunk, b),
            )

        return self._merge_chunks(ids, one)

    def refill_status(self, refill_id: int) -> RefillStatus:
        rid = int(refill_id)
        return self._parsed(
            "refill_status", {"refill": str(rid)}, lambda b: parsing.parse_refill_status(rid, b)
        )

    def refill_statuses(self, refill_ids: Iterable[int]) -> dict[int, RefillStatus]:
        ids = _unique(refill_ids)

        def one(chunk: list[int]) -> dict[int, RefillStatus]:
            return self._parsed(
                "refill_status",
                {"refills": ",".join(map(str, chunk))},
                lambda b: parsing.parse_multi_refill_status(chunk, b),
            )

        return self._merge_chunks(ids, one)

    def _merge_chunks(self, ids: list[int], one: Callable[[list[int]], dict[int, R]]) -> dict:
        merged: dict[int, R] = {}
        for _chunk, result in self.map_concurrent(one, chunked(ids)):
            if isinstance(result, BaseException):
                raise result
            merged.update(result)
        return {i: merged[i] for i in ids}

    # ------------------------------------------------------------------ writing actions

    def add(self, params: Mapping[str, str]) -> int:
        """Place one order; returns the panel's order id.

        Raises APIError (refused: nothing placed), InsufficientFundsError, or
        AmbiguousSubmissionError (may have been placed: record it, never resend).
        """
        fields = {k: str(v) for k, v in params.items() if k not in ("key", "action")}
        return self._parsed("add", fields, parsing.parse_add)

    def refill(self, order_id: int) -> RefillResult:
        oid = int(order_id)
        return self._parsed("refill", {"order": str(oid)}, lambda b: parsing.parse_refill(oid, b))

    def refills(self, order_ids: Iterable[int]) -> list[RefillResult]:
        """Multi refill, 100 ids a call. A chunk whose outcome is unknown yields results with
        `ambiguous=True`; a chunk the panel refused outright carries its error per order."""
        return self._write_chunks(
            "refill",
            _unique(order_ids),
            parsing.parse_multi_refill,
            lambda oid, msg, amb: RefillResult(order_id=oid, error=msg, ambiguous=amb),
        )

    def cancel(self, order_ids: Iterable[int]) -> list[CancelResult]:
        """Cancel orders (the API's `orders` form), 100 ids a call; outcomes per order."""
        return self._write_chunks(
            "cancel",
            _unique(order_ids),
            parsing.parse_multi_cancel,
            lambda oid, msg, amb: CancelResult(oid, accepted=False, error=msg, ambiguous=amb),
        )

    def _write_chunks(
        self,
        action: str,
        ids: list[int],
        parse: Callable[[list[int], Any], list[T]],
        failed: Callable[[int, str, bool], T],
    ) -> list[T]:
        def one(chunk: list[int]) -> list[T]:
            return self._parsed(
                action, {"orders": ",".join(map(str, chunk))}, lambda b: parse(chunk, b)
            )

        by_chunk: dict[int, list[T]] = {}
        for chunk, result in self.map_concurrent(one, chunked(ids)):
            if isinstance(result, AmbiguousSubmissionError):
                by_chunk[chunk[0]] = [failed(oid, result.message, True) for oid in chunk]
            elif isinstance(result, PanelError):
                by_chunk[chunk[0]] = [failed(oid, result.message, False) for oid in chunk]
            elif isinstance(result, BaseException):
                raise result
            else:
                by_chunk[chunk[0]] = result
        return [r for chunk in chunked(ids) for r in by_chunk[chunk[0]]]


def _redacted(body: Any, key: str) -> Any:
    """The decoded answer with every occurrence of the key replaced by `***` (a panel may
    echo it in an error sentence, which would then travel into exceptions, DuckDB, reports)."""
    if isinstance(body, str):
        return body.replace(key, "***") if key else body
    if isinstance(body, list):
        return [_redacted(item, key) for item in body]
    if isinstance(body, dict):
        return {_redacted(k, key): _redacted(v, key) for k, v in body.items()}
    return body


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
