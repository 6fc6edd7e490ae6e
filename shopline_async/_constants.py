"""Defaults in one place, so the README's configuration table has one source."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://{handle}.myshopline.com"
DEFAULT_PRODUCTS_API_VERSION = "v20260601"
DEFAULT_IMAGES_API_VERSION = "v20250601"

DEFAULT_TOTAL_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0

# sockets open at once across the whole client, idle keep-alive ones included: room to spare
# in a process whose open-file limit is the common 1,024
DEFAULT_MAX_CONNECTIONS = 256
# idle sockets close after this long, and a pool (an origin's) with nothing in flight closes whole
DEFAULT_KEEPALIVE_TIMEOUT = 15.0
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_INITIAL_RETRY_DELAY = 0.5
DEFAULT_MAX_RETRY_DELAY = 8.0
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_RETRY_DEADLINE = 120.0
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# SHOPLINE's documented bucket: per app per store, 4 requests/s, capacity 40.
DEFAULT_RATE = 4.0
DEFAULT_BUCKET_CAPACITY = 40
# pace smoothly: SHOPLINE serves its queue at the rate whatever arrives at once, so a burst only
# moves the wait into its queue (where it counts against each attempt's timeout, and against a
# bucket that rejects instead of queueing, a full burst plus a late first packet is a 429)
DEFAULT_BURST = 1
# the bucket's capacity: even a rate set too high cannot overflow a queueing bucket
DEFAULT_MAX_IN_FLIGHT = DEFAULT_BUCKET_CAPACITY
# pace 1% under the bucket's rate: a backlog left in SHOPLINE's queue by any hiccup then drains
DEFAULT_PACING_HEADROOM = 0.01

# answers that say a store cannot be written at all (token, frozen, scope, locked, security
# blocks): a batch sends nothing more to that store. 404, 422 and 5xx stay per operation.
STORE_STOPPING_STATUSES = frozenset({401, 402, 403, 423, 433, 434, 435, 436})

# BatchExecutor and the CLI's sync
DEFAULT_BATCH_CONCURRENCY = 100
DEFAULT_MAX_PENDING = 10_000
# encoded bodies taken from the input and not yet reported: a catalog of 50 KiB descriptions
# holds about 650 at a time instead of max_pending's 10,000 (half a gigabyte)
DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024

# the fleet (shopline_async.fleet): its Temporal task queue, and how a drain runs
DEFAULT_FLEET_TASK_QUEUE = "shopline-fleet"
DEFAULT_FLEET_CHUNK_SIZE = 200  # at 4 requests/s, under a minute of a store's bucket
DEFAULT_HEARTBEAT_TIMEOUT = 30.0
DEFAULT_FLEET_MAX_STORES = 100  # stores one worker drains at once

LOGGER_NAME = "shopline_async"
