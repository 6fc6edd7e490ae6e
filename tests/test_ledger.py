"""The sync ledger: a rerun sends only what changed or did not succeed; the CLI as a subprocess."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_cli import TOKENS, ThreadedMock, product_rows, read_results, write_jsonl

from shopline_async import BatchExecutor, ConfigError, Ledger, LedgerBusyError, RateLimit, ShoplineClient, UpdateProduct
from shopline_async.mock import Faults, MockShopline, MockStoreConfig

EAST_TOKEN = next(t for t, h in TOKENS.items() if h == "east")


def run_cli(
    tmp_path: Path, base_url: str, source: Path, *extra: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "shopline_async.cli", "sync", str(source), "--store", "east"]
    args += ["--base-url", base_url, "--progress", "never", "--unlimited", *extra]  # the mock has no limit here
    env = {**os.environ, "SHOPLINE_ACCESS_TOKEN": EAST_TOKEN}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.fixture
def mock() -> Any:
    with ThreadedMock(MockStoreConfig(rate=None)) as server:
        yield server


@pytest.mark.slow
def test_a_second_run_sends_nothing_and_a_change_sends_only_the_changed_rows(
    mock: MockShopline, tmp_path: Path
) -> None:
    rows = product_rows(40)
    source = write_jsonl(tmp_path / "catalog.jsonl", rows)
    assert run_cli(tmp_path, mock.base_url, source).returncode == 0
    assert mock.stats("east").requests == 40
    assert (tmp_path / "shopline-sync.ledger.sqlite3").exists()  # the documented default place

    second = run_cli(tmp_path, mock.base_url, source)
    assert second.returncode == 0, second.stderr
    assert mock.stats("east").requests == 40  # nothing sent
    assert "40 unchanged, skipped" in second.stdout
    results = read_results(tmp_path / "catalog.jsonl.results.jsonl")
    assert len(results) == 40 and all(r["outcome"] == "skipped" and r["reason"] == "unchanged" for r in results)

    for i in (3, 17, 31):
        rows[i]["product"]["title"] = f"changed {i}"
    write_jsonl(source, rows)
    assert run_cli(tmp_path, mock.base_url, source).returncode == 0
    assert mock.stats("east").requests == 43
    assert mock.stats("east").writes["p3"] == 2 and mock.stats("east").writes["p4"] == 1

    assert run_cli(tmp_path, mock.base_url, source, "--full").returncode == 0
    assert mock.stats("east").requests == 83
    assert run_cli(tmp_path, mock.base_url, source, "--no-ledger").returncode == 0
    assert mock.stats("east").requests == 123


@pytest.mark.slow
def test_jsonl_then_csv_in_one_folder_each_sends_its_own_rows(mock: MockShopline, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "catalog.jsonl", [{"product_id": f"j{i}", "product": {"title": "J"}} for i in range(3)])
    with (tmp_path / "catalog.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["product_id", "title"])
        writer.writerows([[f"c{i}", "C"] for i in range(1, 4)])
    assert run_cli(tmp_path, mock.base_url, tmp_path / "catalog.jsonl").returncode == 0
    resumed = run_cli(tmp_path, mock.base_url, tmp_path / "catalog.csv", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert dict(mock.stats("east").writes) == {"j0": 1, "j1": 1, "j2": 1, "c1": 1, "c2": 1, "c3": 1}
    assert len(read_results(tmp_path / "catalog.csv.results.jsonl")) == 3
    assert len(read_results(tmp_path / "catalog.jsonl.results.jsonl")) == 3


def kill_mid_run_then_rerun_reordered(
    tmp_path: Path, n: int, *extra: str
) -> tuple[Counter[str], set[str], list[dict[str, Any]]]:
    """``sync`` of ``n`` products SIGKILLed a third of the way, then run again on the rows reversed
    (``extra``: more options, such as ``--ledger``). Returns the writes the mock counted per
    product, the products written before the kill, and the rerun's results."""
    # slow answers so the kill lands mid-run, with many results committed and many not yet sent
    config = MockStoreConfig(rate=None, faults=Faults(latency_rate=1.0, latency=0.02))
    with ThreadedMock(config) as server:
        rows = product_rows(n)
        source = write_jsonl(tmp_path / "c.jsonl", rows)
        args = [sys.executable, "-m", "shopline_async.cli", "sync", str(source), "--store", "east", *extra]
        args += ["--base-url", server.base_url, "--progress", "never", "--unlimited", "--concurrency", "20"]
        env = {**os.environ, "SHOPLINE_ACCESS_TOKEN": EAST_TOKEN}
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while server.stats("east").writes.total() < n // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        written_before = set(server.stats("east").writes)
        assert 0 < len(written_before) < n

        write_jsonl(source, list(reversed(rows)))  # another order, the same rows
        rerun = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        return Counter(server.stats("east").writes), written_before, read_results(tmp_path / "c.jsonl.results.jsonl")


@pytest.mark.slow
def test_sigkill_mid_run_then_a_reordered_rerun_writes_everything_exactly(tmp_path: Path) -> None:
    n = 600
    writes, written_before, results = kill_mid_run_then_rerun_reordered(tmp_path, n)
    assert set(writes) == {f"p{i}" for i in range(n)}  # every product written
    skipped = {f"p{r['key'].split('-')[1]}" for r in results if r["outcome"] == "skipped"}
    assert skipped <= written_before  # nothing skipped that was not written
    resent = [p for p, count in writes.items() if count > 1]
    # only what was acknowledged but not yet committed: one commit window (200 rows or 0.5 s)
    # plus the requests in flight when the process died
    assert len(resent) <= 200 + 20, len(resent)
    assert len(skipped) >= len(written_before) - 220


@pytest.mark.slow
def test_two_runs_on_one_ledger_are_refused_with_a_clear_message(mock: MockShopline, tmp_path: Path) -> None:
    with Ledger(tmp_path / "shared.sqlite3"):
        with pytest.raises(LedgerBusyError, match="in use by another run"):
            Ledger(tmp_path / "shared.sqlite3")
        source = write_jsonl(tmp_path / "c.jsonl", product_rows(2))
        refused = run_cli(tmp_path, mock.base_url, source, "--ledger", str(tmp_path / "shared.sqlite3"))
        assert refused.returncode == 2 and "in use by another run" in refused.stderr
        assert mock.stats("east").requests == 0
    with Ledger(tmp_path / "shared.sqlite3"):  # released on close
        pass


async def test_the_ledger_from_python_records_only_acknowledged_writes(tmp_path: Path) -> None:
    config = MockStoreConfig(rate=None)
    stores = {"east": MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=422))}
    async with MockShopline({EAST_TOKEN: "east"}, config=config, store_configs=stores) as server:
        async with ShoplineClient(base_url=server.base_url, rate_limit=RateLimit.unlimited()) as client:
            client.store("east", EAST_TOKEN)
            ops = [UpdateProduct("east", f"p{i}", {"title": "x"}, key=i) for i in range(3)]
            with Ledger(tmp_path / "l.sqlite3") as ledger:
                first = await BatchExecutor(client, ledger=ledger).gather(ops)
                assert [r.outcome for r in first.results] == ["failed"] * 3  # each path's first answer: 422
                second = await BatchExecutor(client, ledger=ledger).gather(ops)
                assert [r.outcome for r in second.results] == ["ok"] * 3  # a failed write is sent again
                third = await BatchExecutor(client, ledger=ledger).gather(ops)
                assert [r.outcome for r in third.results] == ["unchanged"] * 3
                assert third.summary.unchanged == 3 and third.summary.failed == 0 and third.summary.ok == 0
                assert all(r.ok and r.attempts == 0 for r in third.results)
                assert [r.trace_id for r in third.results] == [r.trace_id for r in second.results]
                changed = [UpdateProduct("east", "p1", {"title": "y"}, key=1)]
                assert [r.outcome for r in (await BatchExecutor(client, ledger=ledger).gather(changed)).results] == [
                    "ok"
                ]
                assert len(ledger) == 3
    assert server.stats("east").writes == {"p0": 1, "p1": 2, "p2": 1}


def test_results_files_are_named_after_the_whole_input(tmp_path: Path) -> None:
    from shopline_async._sync import default_results_path

    assert default_results_path(str(tmp_path / "a.csv")) == tmp_path / "a.csv.results.jsonl"
    assert default_results_path("-").name == "sync-results.jsonl"


def test_a_file_that_is_not_a_ledger_is_refused_and_released(tmp_path: Path) -> None:
    path = tmp_path / "not-sqlite.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite database"):
        Ledger(path)
    path.unlink()
    with Ledger(path) as ledger:  # the lock was released: the same path opens once it is a ledger
        assert len(ledger) == 0
