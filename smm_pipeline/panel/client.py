"""The API v2 client: one `PanelClient` per panel, thread-safe, sync.

Every request goes through the panel's budget (rate and concurrency cap, `panel/ratelimit.py`),
shared with every process that uses the same budget location (`budget_dir`: a folder on this
machine, or the warehouse's Postgres for every machine); a client made for polls
(`priority=Priority.POLL`) takes only what submissions leave, and gives up after `budget_wait`.
Read-only actions retry with exponential backoff and jitter, honouring Retry-After (on 429 and
on any 5xx that carries it); a 3xx or 4xx answer to a read is an error, not retried.

Writing actions (`add`, `refill`, `cancel`) get a definite outcome only from a readable JSON
answer: the action's result, or a refusal `{"error": ...}` with a status below 500
(`APIError`: nothing was done). They are resent only when the request provably never left this
machine (connection refused) or the panel said it did not process it (429). Any other answer
that may have reached the panel (a redirect, an HTML or empty page of any status, a 5xx,
truncated or unexpected JSON, a timeout or dropped connection after sending) is an
`AmbiguousSubmissionError`, never retried; its `stops_batch` says whether the answer was not
the API at all (3xx, non-JSON 4xx, HTML below 500), which would repeat for every request.
A key the panel echoes in its answer is replaced by `***` before the answer is read.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, TypeVar

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
from smm_pipeline.panel.ratelimit import PanelBudget, Priority, budget_for

if TYPE_CHECKING:
    from smm_pipeline.panel.ratelimit import BudgetLocation

log = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 100
WRITE_ACTIONS = frozenset({"add", "refill", "cancel"})
_MAX_BACKOFF_SECONDS = 30.0

T = TypeVar("T")
R = TypeVar("R")


def chunked(ids: Sequence[T], size: int = MAX_IDS_PER_CALL) -> list[list[T]]:
    """Split ids into lists of at most `size`, keeping order."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def _unique(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in ids))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, as httpx builds it for `verify=True` (certifi's
    CA bundle): building it costs about 60 ms, and every run makes a client per panel."""
    return httpx.create_ssl_context()


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
        budget_dir: BudgetLocation | None = None,
        priority: Priority = Priority.SUBMIT,
        budget_wait: float | None = None,
    ) -> None:
        if not isinstance(key, Secret):
            raise TypeError("key must be a config.Secret")
        self.panel = panel
        self._key = key
        self._sleep = sleep
        self._backoff_base = backoff_base
        self.budget: PanelBudget = budget_for(
            panel.name, panel.rate_limit_per_minute, panel.max_concurrency, budget_dir
        )
        self.priority = priority
        self.budget_wait = budget_wait
        self._http = httpx.Client(
            timeout=httpx.Timeout(panel.timeout_seconds, connect=min(10.0, panel.timeout_seconds)),
            follow_redirects=False,
            verify=_tls_context(),
            headers={"User-Agent": panel.user_agent, "Accept": "application/json"},
            limits=httpx.Limits(
                max_connections=panel.max_concurrency,
                max_keepalive_connections=panel.max_concurrency,
            ),
            transport=transport,
        )
        self._counter_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        # Ids per multi call (the API's limit is 100); lower it for a panel that wants fewer.
        self.max_ids_per_call = MAX_IDS_PER_CALL

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

    def _send_once(
        self,
        action: str,
        params: Mapping[str, str],
        before_send: Callable[[], None] | None = None,
    ) -> Any:
        """One POST. Returns the decoded JSON body or raises a PanelError subclass."""
        data = {"key": self._key.reveal(), "action": action, **params}
        with self.budget.slot(self.priority, self.budget_wait):  # may raise BudgetExhausted
            if before_send is not None:
                before_send()  # may raise: then nothing is sent
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
        """The answer's JSON, or the error it amounts to.

        429 is RateLimitedError for every action. A JSON `{"error": ...}` with a status below
        500 is an APIError (a refusal: nothing was done). Otherwise a 3xx, 4xx or 5xx is an
        HTTPStatusError and a 2xx that is not JSON an InvalidResponseError; for a write either
        becomes an AmbiguousSubmissionError around it, with `stops_batch` when the answer is
        not the API at all (3xx, 4xx other than 408 without JSON, HTML below 500).
        """
        status = response.status_code
        if status == 429:
            raise self._error(
                RateLimitedError,
                "rate limited (HTTP 429)",
                action,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        key = self._key.reveal()
        text = response.text
        try:
            body = parsing.decode_json(text)
        except ValueError:
            body = None
        # Without a backslash the text has no escapes, so a key not in the text is in none of
        # its strings either: the walk is needed only otherwise.
        if body is not None and key and (key in text or "\\" in text):
            body = _redacted(body, key)
        message = parsing.lone_error(body) if body is not None else None
        # By its text, not its Content-Type: many PHP panels send their JSON as text/html.
        looks_html = text.lstrip()[:1] == "<"
        if 300 <= status < 400:
            location = _redacted(response.headers.get("Location", ""), key)[:200]
            error = self._error(
                HTTPStatusError,
                f"redirected (HTTP {status}{f' to {location}' if location else ''}); redirects "
                "are never followed because the key travels in the body: fix the panel url",
                action,
                status_code=status,
            )
            raise self._unanswered(error, action, stops_batch=True)
        if status >= 400:
            if message is not None and status < 500:
                raise self._api_error(message, action)
            if body is None:
                what = "an empty body" if not text.strip() else None
                what = what or ("an HTML page" if looks_html else "a body that is not JSON")
                detail = f" with {what}, not the API's JSON answer"
            else:
                detail = f": {message}" if message else ""
            error = self._error(
                HTTPStatusError,
                f"HTTP {status}{detail}",
                action,
                status_code=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
            not_the_api = body is None and status < 500 and status != 408
            raise self._unanswered(error, action, stops_batch=not_the_api)
        if body is None:
            if looks_html:
                what = "an HTML page"
            else:
                what = "an empty body" if not text.strip() else "invalid or truncated JSON"
            error = self._error(InvalidResponseError, f"answered {what} (HTTP {status})", action)
            raise self._unanswered(error, action, stops_batch=what == "an HTML page")
        if message is not None:
            raise self._api_error(message, action)
        return body

    def _unanswered(self, error: PanelError, action: str, *, stops_batch: bool) -> PanelError:
        """`error` for a read; for a write, the ambiguous outcome it amounts to."""
        if action in WRITE_ACTIONS:
            return AmbiguousSubmissionError(
                error, panel=self.panel.name, action=action, stops_batch=stops_batch
            )
        return error

    def _api_error(self, message: str, action: str) -> APIError:
        cls = InsufficientFundsError if "not enough funds" in message.lower() else APIError
        return cls(message, panel=self.panel.name, action=action)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 300.0)
        delay = min(_MAX_BACKOFF_SECONDS, self._backoff_base * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    def request(
        self,
        action: str,
        params: Mapping[str, str] | None = None,
        *,
        before_send: Callable[[], None] | None = None,
    ) -> Any:
        """POST one action; retries per the action's safety. Returns the decoded JSON.

        `before_send` is called before each attempt once a concurrency slot is held; raising
        there sends nothing (used to stop a batch between chunks)."""
        params = dict(params or {})
        writing = action in WRITE_ACTIONS
        attempt = 0
        while True:
            try:
                return self._send_once(action, params, before_send)
            except RateLimitedError as exc:
                # The panel refused without processing: safe to retry, for writes too.
                wait = self._backoff(attempt, exc.retry_after)
                self.budget.back_off(wait)
                error: PanelError = exc
            except TransportError as exc:
                if writing and exc.sent:
                    raise AmbiguousSubmissionError(
                        exc, panel=self.panel.name, action=action
                    ) from None
                error, wait = exc, self._backoff(attempt, None)
            except HTTPStatusError as exc:  # `_decode` makes these ambiguous for writes
                if writing:  # never resend a write, whatever changes above
                    raise self._unanswered(exc, action, stops_batch=False) from None
                if exc.status_code < 500 and exc.status_code not in (408,):
                    raise
                error, wait = exc, self._backoff(attempt, exc.retry_after)
                if exc.retry_after is not None:  # e.g. 503 "come back in N seconds"
                    self.budget.back_off(wait)
            except InvalidResponseError as exc:  # likewise
                if writing:
                    raise self._unanswered(exc, action, stops_batch=False) from None
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

    def _parsed(
        self,
        action: str,
        params: Mapping[str, str],
        parse: Callable[[Any], R],
        before_send: Callable[[], None] | None = None,
    ) -> R:
        body = self.request(action, params, before_send=before_send)
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
        """Run `fn` over items with at most `max_concurrency` in flight (the budget still
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
        return self._merge_chunks(_unique(order_ids), self.status_chunk)

    def status_chunk(
        self, chunk: list[int], before_send: Callable[[], None] | None = None
    ) -> dict[int, OrderStatus]:
        """One multi-status call (at most `max_ids_per_call` ids); per-item errors as data.
        `before_send` is called once the request holds its budget (see `request`)."""
        return self._parsed(
            "status",
            {"orders": ",".join(map(str, chunk))},
            lambda b: parsing.parse_multi_status(chunk, b),
            before_send,
        )

    def refill_status(self, refill_id: int) -> RefillStatus:
        rid = int(refill_id)
        return self._parsed(
            "refill_status", {"refill": str(rid)}, lambda b: parsing.parse_refill_status(rid, b)
        )

    def refill_statuses(self, refill_ids: Iterable[int]) -> dict[int, RefillStatus]:
        return self._merge_chunks(_unique(refill_ids), self.refill_status_chunk)

    def refill_status_chunk(
        self, chunk: list[int], before_send: Callable[[], None] | None = None
    ) -> dict[int, RefillStatus]:
        """One multi refill-status call (at most `max_ids_per_call` ids)."""
        return self._parsed(
            "refill_status",
            {"refills": ",".join(map(str, chunk))},
            lambda b: parsing.parse_multi_refill_status(chunk, b),
            before_send,
        )

    def _merge_chunks(self, ids: list[int], one: Callable[[list[int]], dict[int, R]]) -> dict:
        merged: dict[int, R] = {}
        for _chunk, result in self.map_concurrent(one, chunked(ids, self.max_ids_per_call)):
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

    def refills(
        self, order_ids: Iterable[int], stop: BatchStop | None = None
    ) -> list[RefillResult]:
        """Multi refill, 100 ids a call. A chunk whose outcome is unknown yields results with
        `ambiguous=True`; a chunk the panel refused outright carries its error per order.
        `stop` carries a batch's stop across calls (see `_write_chunks`)."""
        return self._write_chunks(
            "refill",
            _unique(order_ids),
            parsing.parse_multi_refill,
            lambda oid, msg, amb: RefillResult(order_id=oid, error=msg, ambiguous=amb),
            stop or BatchStop(),
        )

    def cancel(self, order_ids: Iterable[int], stop: BatchStop | None = None) -> list[CancelResult]:
        """Cancel orders (the API's `orders` form), 100 ids a call; outcomes per order.
        `stop` carries a batch's stop across calls (see `_write_chunks`)."""
        return self._write_chunks(
            "cancel",
            _unique(order_ids),
            parsing.parse_multi_cancel,
            lambda oid, msg, amb: CancelResult(oid, accepted=False, error=msg, ambiguous=amb),
            stop or BatchStop(),
        )

    def _write_chunks(
        self,
        action: str,
        ids: list[int],
        parse: Callable[[list[int], Any], list[T]],
        failed: Callable[[int, str, bool], T],
        stop: BatchStop,
    ) -> list[T]:
        """One write per chunk, outcomes per id in the order given.

        A chunk whose outcome is unknown is ambiguous for each of its ids; a chunk refused
        outright carries the refusal per id. Once a chunk's answer is not the API at all
        (`stops_batch`), chunks not yet sent are not sent: their ids are definite failures
        ("not sent: ..."), safe to send again once the panel url or key is fixed. The same
        `stop` passed to several calls makes them one batch.
        """

        def check_stop() -> None:
            if stop.error is not None:
                raise _NotSent(stop.error, panel=self.panel.name, action=action)

        def one(chunk: list[int]) -> list[T]:
            params = {"orders": ",".join(map(str, chunk))}
            try:
                return self._parsed(action, params, lambda b: parse(chunk, b), check_stop)
            except AmbiguousSubmissionError as exc:
                if exc.stops_batch:
                    stop.set(exc)
                raise

        chunks = chunked(ids, self.max_ids_per_call)
        by_chunk: dict[int, list[T]] = {}
        for chunk, result in self.map_concurrent(one, chunks):
            if isinstance(result, AmbiguousSubmissionError):
                by_chunk[chunk[0]] = [failed(oid, result.message, True) for oid in chunk]
            elif isinstance(result, PanelError):  # a refusal, or _NotSent
                by_chunk[chunk[0]] = [failed(oid, result.message, False) for oid in chunk]
            elif isinstance(result, BaseException):
                raise result
            else:
                by_chunk[chunk[0]] = result
        return [r for chunk in chunks for r in by_chunk[chunk[0]]]


class BatchStop:
    """A multi write's stop flag: the first answer of the batch that was not the API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: AmbiguousSubmissionError | None = None

    def set(self, error: AmbiguousSubmissionError) -> None:
        with self._lock:
            if self.error is None:
                self.error = error


class _NotSent(PanelError):
    """A chunk of a multi write that was not sent: an earlier answer was not the API."""

    def __init__(self, stop: AmbiguousSubmissionError, *, panel: str, action: str) -> None:
        super().__init__(
            "not sent: the panel answered an earlier request of this batch with something "
            f"that is not the API ({stop.cause.message})",
            panel=panel,
            action=action,
        )


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
