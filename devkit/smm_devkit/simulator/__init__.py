"""The bundled SMM panel: an API v2 server with state, progress over time and faults.

Tests, the demo (`make run`) and the benchmarks talk to it over real HTTP. It is the panel's
side of the protocol and shares no code with our client.

Run: ``python -m smm_devkit.simulator --host 127.0.0.1 --port 8765 [--key K ...]
[--state-file PATH] [--catalog-file PATH] [--latency-ms N] [--rate-limit-per-minute N]
[--balance 1000.00] [--currency USD] [--progress-seconds 30] [--clock-speed 1]
[--delay-values 0,5,10,...] [--fault KIND[:ACTION][:TIMES][:NAME=VALUE...] ...]``;
it prints ``simulator listening on http://HOST:PORT/api/v2``.
From Python: ``smm_devkit.simulator.testing.running_simulator`` (thread) and
``start_simulator_process`` (child process).

API (``POST /api/v2``, form fields; GET with a query string works too) answers exactly the
shapes of the providers' reference pages: numbers as strings, multi ``status`` keyed by the id
as sent, multi ``refill``/``refill_status``/``cancel`` as lists, more than 100 ids answered
``{"error": "Incorrect request"}``. Error sentences (HTTP 200): "Invalid API key",
"Incorrect request", "Incorrect service ID", "Incorrect link", "Incorrect quantity",
"Quantity less than minimal N", "Quantity more than maximal N", "Field F is required",
"Incorrect answer number", "Incorrect runs", "Incorrect interval", "Incorrect delay",
"Incorrect posts", "Incorrect old posts", "Incorrect expiry date",
"Min quantity is greater than max quantity", "Not enough funds on balance",
"You have active order with this link. Please wait until order being completed.",
"You have active subscription with this username. Please wait until subscription being
completed.", "Incorrect order ID", "Refill not found", "Refill is disabled for this service",
"Refill is not available for this order", "The refill task is not completed for this order",
"Cancel is disabled for this service", "The order cannot be canceled in its current status".

Money: charge = rate x quantity / 1000 (x runs for drip-feed; Package and Custom Comments
Package cost the flat rate), taken at ``add``. Partial refunds charge x remains / total
(cut to 6 decimals), Canceled refunds everything (charge "0").

Progress: an order is Pending for 20% of its duration (``--progress-seconds``, plus
(runs - 1) x interval for drip-feed), then delivers; its fate is a hash of its id:
Completed 72%, Partial 12%, "Processing" then Completed 6%, Slow (In progress 40x longer)
6%, Canceled by the panel 4% (weights changeable via config ``outcome_weights``). A refill is
Pending, In progress, then Completed or (15%) Rejected. A subscription places an order for
each new post (every 6 simulated hours, after its delay) and one per ``old_posts`` at once.
Order ids start at 10001, refill ids at 501.

Time: simulated epoch seconds = real time x ``clock_speed`` + offsets added by
``/_sim/advance``. The CLI default speed is 1; the test helpers default to 0 (frozen).

Admin (loopback callers only; JSON bodies; errors are 4xx ``{"error": "..."}``):

- ``GET /_sim/health`` -> ``{"ok": true, "now", "iso", "speed"}``; ``GET /_sim/clock``.
- ``POST /_sim/advance`` ``{"seconds": N}`` -> ``{"now", "iso", "speed"}``.
- ``POST /_sim/faults`` ``{"kind", "action"?, "times"?: 1 (-1 = until cleared),
  "seconds"?: 5 (slow), "retry_after"?: 1 (http_429), "commit"?: bool, "message"?:
  "Incorrect request" and "status"?: 200 (refusal)}`` (or ``{"faults": [...]}``) ->
  ``{"faults": [queued]}``; ``GET`` lists, ``DELETE`` (or ``POST /_sim/faults/clear``)
  clears. Kinds: drop_before, drop_after, http_500, html_502, html_200, truncated_json,
  http_429, slow, bare_item_errors, status_variants, redirect_302 (HTTP 302, Location
  /login, a small HTML body), html_403 (Cloudflare "Sorry, you have been blocked" page),
  empty_404 (HTTP 404, empty body), refusal (HTTP ``status`` ``{"error": message}``, nothing
  done), other_id (add/refill/cancel only: the action is done, the answer names another id:
  add the latest earlier order, refill the latest earlier refill (the new ids when there is
  none), cancel's items other orders than asked). drop_after, truncated_json, slow,
  redirect_302 and the two presentation kinds commit the action first by default; the others
  do not (override with ``commit``; refusal never commits, other_id always does). The
  command line queues the same faults at start with ``--fault``:
  ``kind[:action][:times][:name=value...]`` (an empty action is any action; options commit,
  seconds, retry_after, status, and message last, colons kept) or the JSON object.
- ``GET /_sim/orders`` -> ``{"orders": [{"order", "kind", "service", "type", "params",
  "link", "quantity", "runs", "interval", "total", "charged", "charge", "status",
  "remains", "start_count", "outcome", "finishes_at", "created_at", "forced",
  "subscription"}]}`` (subscriptions: ``username``, ``status``, ``posts``, ``orders``...).
- ``GET /_sim/orders/ID``; ``POST /_sim/orders/ID`` ``{"status"?, "remains"?,
  "start_count"?}`` freezes the order there (any status word, even unknown ones; the refund
  follows: Partial pays back remains/total, Canceled and Refunded everything).
- ``GET /_sim/refills``; ``POST /_sim/refills/ID`` ``{"status"}``.
- ``GET /_sim/catalog``; ``POST /_sim/catalog`` ``{"replace"?: [...], "add"?: [...],
  "patch"?: {"ID": {fields}}, "remove"?: [ids]}`` -> ``{"services": [...]}``.
- ``GET /_sim/balance``; ``POST /_sim/balance`` ``{"balance": "12.50", "currency"?}``.
- ``GET /_sim/stats`` -> ``{"api_requests", "calls": {action: n} (every call received),
  "ids_per_call": {action: [n, ...]}, "orders_created", "orders_total", "refills_total",
  "errors": {sentence: n}, "faults_fired": {kind: n}, "rate_limited", "in_flight",
  "max_in_flight", "max_calls_per_minute"}``; ``POST /_sim/reset-stats``.
- ``GET|POST /_sim/config`` ``{"latency_ms", "rate_limit_per_minute", "status_variants",
  "bare_item_errors", "clock_speed", "delay_values", "progress_seconds",
  "outcome_weights", "refill_rejected_percent"}``.

State: with ``--state-file`` every change is appended to a JSON-lines journal before the
answer is sent and replayed at start, so a restart (even after SIGKILL) loses nothing that
was acknowledged. Config, faults and stats are runtime-only.
"""
