"""``shopline-async demo``: a catalog sync against the embedded mock server, no account needed."""

from __future__ import annotations

import json
from pathlib import Path

from ._config import RateLimit, RetryPolicy
from ._sync import cli_command, run_sync
from .mock import Faults, MockShopline, MockStoreConfig
from .models._product import ImageInput, ProductUpdate

STORES = {"demo-token-east": "demo-east", "demo-token-west": "demo-west"}
PRODUCTS_PER_STORE = 200
IMAGES_PER_STORE = 50
# scaled up from SHOPLINE's 4/s so the demo takes seconds, not minutes
DEMO_RATE = 100.0
DEMO_BURST = 40


def write_catalog(path: Path) -> int:
    """About 500 updates over two stores, with a few deliberately bad rows. Returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for store in STORES.values():
        for n in range(1, PRODUCTS_PER_STORE + 1):
            row = {
                "store": store,
                "key": f"{store}/product/{n}",
                "product_id": f"{n:04d}",
                "product": {
                    "title": f"Linen shirt no. {n}",
                    "vendor": "Demo Goods",
                    "status": "active" if n % 3 else "draft",
                    "tags": ["linen", "summer"] if n % 2 else ["linen"],
                    "options": [{"name": "Color"}, {"name": "Size"}],
                    "variants": [
                        {"sku": f"LS-{n}-RED-M", "option1": "Red", "option2": "M", "price": f"{19 + n % 10}.90"},
                        {"sku": f"LS-{n}-BLUE-L", "option1": "Blue", "option2": "L", "price": f"{21 + n % 10}.50"},
                    ],
                },
            }
            lines.append(json.dumps(row))
        for n in range(1, IMAGES_PER_STORE + 1):
            row = {
                "store": store,
                "key": f"{store}/image/{n}",
                "product_id": f"{n:04d}",
                "image_id": f"img-{n:04d}",
                "image": {"alt": f"Linen shirt no. {n}, front", "position": 1},
            }
            lines.append(json.dumps(row))
    # the rows a real feed gets wrong, each reported with its line and JSON path
    lines.append(
        json.dumps({"store": "demo-east", "product_id": "9001", "product": {"variants": [{"price": "-12.34"}]}})
    )
    lines.append(json.dumps({"store": "demo-east", "product_id": "9002", "product": {"status": "live"}}))
    lines.append(json.dumps({"store": "demo-west", "product_id": "9003", "product": {"title": "x" * 300}}))
    lines.append('{"store": "demo-west", "product_id": "9004", "product": {"title": "cut off"')
    lines.append(json.dumps({"store": "demo-west", "product_id": "0001", "image_id": "no-such", "image": {"alt": "?"}}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


async def run_demo(directory: Path, *, progress: bool) -> int:
    catalog = directory / "catalog.jsonl"
    results = directory / "catalog.jsonl.results.jsonl"
    ledger = directory / "ledger.sqlite3"
    stores = directory / "stores.json"
    rows = write_catalog(catalog)
    # mock-only tokens, not secrets: lets the user try the CLI by hand against a mock server
    stores.write_text(json.dumps({"stores": {handle: {"token": token} for token, handle in STORES.items()}}))
    config = MockStoreConfig(rate=DEMO_RATE, capacity=DEMO_BURST, faults=Faults(seed=42, error_rate=0.03))
    async with MockShopline(STORES, config=config) as server:
        for store in STORES.values():
            for n in range(1, IMAGES_PER_STORE + 1):
                image = ImageInput(id=f"img-{n:04d}", src=f"https://img.example/{n:04d}.png")
                server.seed(store, f"{n:04d}", ProductUpdate(title=f"Shirt {n}", images=[image]))
        names = ", ".join(STORES.values())
        print(f"Mock SHOPLINE server: {server.base_url} (stores {names}, {DEMO_RATE:g} req/s each,")
        print("  3% injected server errors that the client retries)")
        print(f"Catalog: {catalog} ({rows} rows, 5 of them deliberately bad)\n")
        await run_sync(
            input_path=str(catalog),
            fmt="jsonl",
            stores={handle: {"token": token} for token, handle in STORES.items()},
            default_store=None,
            base_url=server.base_url,
            rate_limit=RateLimit(rate=DEMO_RATE, max_in_flight=DEMO_BURST),
            concurrency=2 * DEMO_BURST,
            retry=RetryPolicy(initial_delay=0.1),
            results_path=results,
            ledger_path=ledger,
            full=False,
            dry_run=False,
            progress=progress,
        )
        written = sum(server.stats(h).writes.total() for h in STORES.values())
    print(f"\nThe mock server accepted {written} writes. The failures:")
    print(f"  grep '\"ok\":false' {results}")
    print(f"Check a file without sending anything:\n  {cli_command()} sync {catalog} --dry-run --config {stores}")
    return 0
