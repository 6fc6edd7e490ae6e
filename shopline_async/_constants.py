"""Defaults in one place, so the README's configuration table has one source."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://{handle}.myshopline.com"
DEFAULT_PRODUCTS_API_VERSION = "v20260601"
DEFAULT_IMAGES_API_VERSION = "v20250601"

DEFAULT_TOTAL_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0

DEFAULT_CONNECTIONS_PER_STORE = 40
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_INITIAL_RETRY_DELAY = 0.5
DEFAULT_MAX_RETRY_DELAY = 8.0
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_RETRY_DEADLINE = 120.0
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# SHOPLINE's documented bucket: per app per store, 4 requests/s, capacity 40.
DEFAULT_RATE = 4.0
DEFAULT_BURST = 40
DEFAULT_MAX_IN_FLIGHT = 40
# pace 1% under the bucket's rate: a backlog left in SHOPLINE's queue by any hiccup then drains
DEFAULT_PACING_HEADROOM = 0.01

LOGGER_NAME = "shopline_async"
