"""A local mock of SHOPLINE's product endpoints: ``MockShopline``, its configuration and statistics."""

from ._config import Faults, MockStoreConfig
from ._server import MockShopline, StoreStats

__all__ = ["Faults", "MockShopline", "MockStoreConfig", "StoreStats"]
