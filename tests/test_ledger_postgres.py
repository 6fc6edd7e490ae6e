"""The ledger on PostgreSQL (a real server from the ``pgserver`` wheel): the SQLite ledger's
semantics, several runs sharing one database, and no password in anything it says."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL ledger needs psycopg ([postgres])")

from test_cli import TOKENS, ThreadedMock, product_rows, read_results, write_jsonl  # noqa: E402
from test_ledger import EAST_TOKEN, kill_mid_run_then_rerun_reordered, run_cli  # noqa: E402

from shopline_async import BatchExecutor, LedgerError, RateLimit, ShoplineClient, UpdateProduct  # noqa: E402
from shopline_async._ledger import PostgresLedger, body_hash, ledger_name, open_ledger  # noqa: E402
from shopline_async.mock import Faults, MockShopline, MockStoreConfig  # noqa: E402

WEST_TOKEN = next(t for t, h in TOKENS.items() if h == "west")


@pytest.fixture
def mock() -> Iterator[MockShopline]:
    with ThreadedMock(MockStoreConfig(rate=None)) as threaded:
        yield threaded


def test_a_write_ahead_intent_stays_unknown_until_recorded_and_a_withdrawal_restores(pg_database: str) -> None:
    target = ("https://east.example", "east", "/p1.json")
    first, second = body_hash(b"one"), body_hash(b"two")
    with open_ledger(pg_database) as ledger:
        assert isinstance(ledger, PostgresLedger) and ledger.last(*target) is None
        ledger.intend(*target, "product", first)
        ledger.commit()
        ledger.record(*target, "product", first, ok=True, status=200, trace_id="t1")
    with open_ledger(pg_database) as ledger:  # what was committed, from another connection
        entry = ledger.last(*target)
        assert entry is not None and (entry.body_hash, entry.ok, entry.status, entry.trace_id) == (
            first,
            True,
            200,
            "t1",
        )
        intent = ledger.intend(*target, "product", second)
        ledger.commit()
        assert ledger.committed_intents >= intent
        # killed here: the next run finds the target's state unknown, and sends it again
    with open_ledger(pg_database) as ledger:
        entry = ledger.last(*target)
        assert entry is not None and (entry.body_hash, entry.ok) == (second, False)
        before = entry
        ledger.intend(*target, "product", first)
        ledger.withdraw(*target, "product", before)  # not sent after all: as it was
        assert len(ledger) == 1
        assert ledger.last(*target) == before


async def test_the_postgres_ledger_records_only_acknowledged_writes(pg_database: str) -> None:
    stores = {"east": MockStoreConfig(rate=None, faults=Faults(fail_first=1, fail_status=422))}
    async with MockShopline({EAST_TOKEN: "east"}, store_configs=stores) as server:
        async with ShoplineClient(base_url=server.base_url, rate_limit=RateLimit.unlimited()) as client:
            client.store("east", EAST_TOKEN)
            ops = [UpdateProduct("east", f"p{i}", {"title": "x"}, key=i) for i in range(3)]
            with open_ledger(pg_database) as ledger:
                first = await BatchExecutor(client, ledger=ledger).gather(ops)
                assert [r.outcome for r in first.results] == ["failed"] * 3
                second = await BatchExecutor(client, ledger=ledger).gather(ops)
                assert [r.outcome for r in second.results] == ["ok"] * 3
            with open_ledger(pg_database) as ledger:  # another run
                third = await BatchExecutor(client, ledger=ledger).gather(ops)
                assert [r.outcome for r in third.results] == ["unchanged"] * 3
                assert [r.trace_id for r in third.results] == [r.trace_id for r in second.results]
    assert server.stats("east").writes == {"p0": 1, "p1": 1, "p2": 1}


@pytest.mark.slow
def test_sync_with_a_postgres_ledger_sends_only_what_changed_and_runs_can_share_it(
    mock: MockShopline, pg_database: str, tmp_path: Path
) -> None:
    east_rows, west_rows = product_rows(30, "east"), product_rows(30, "west")
    east = write_jsonl(tmp_path / "east.jsonl", east_rows)
    west = write_jsonl(tmp_path / "west.jsonl", west_rows)

    def sync_west(*extra: str) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "shopline_async.cli", "sync", str(west), "--store", "west"]
        args += ["--base-url", mock.base_url, "--progress", "never", "--unlimited", "--ledger", pg_database, *extra]
        env = {**os.environ, "SHOPLINE_ACCESS_TOKEN": WEST_TOKEN}
        return subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # two runs at once, one ledger: each records its own store's rows
    west_run = sync_west()
    east_run = run_cli(tmp_path, mock.base_url, east, "--ledger", pg_database)
    assert east_run.returncode == 0, east_run.stderr
    _, err = west_run.communicate(timeout=60)
    assert west_run.returncode == 0, err
    assert mock.stats("east").requests == 30 and mock.stats("west").requests == 30
    assert f"ledger: {ledger_name(pg_database)}" in east_run.stdout
    with open_ledger(pg_database) as ledger:
        assert len(ledger) == 60

    # again: nothing sent; then three rows changed: those three
    assert run_cli(tmp_path, mock.base_url, east, "--ledger", pg_database).returncode == 0
    assert mock.stats("east").requests == 30
    for i in (2, 11, 29):
        east_rows[i]["product"]["title"] = f"changed {i}"
    write_jsonl(east, east_rows)
    changed = run_cli(tmp_path, mock.base_url, east, "--ledger", pg_database)
    assert changed.returncode == 0 and mock.stats("east").requests == 33
    results = read_results(tmp_path / "east.jsonl.results.jsonl")
    assert sorted(r["product_id"] for r in results if r["outcome"] == "ok") == ["p11", "p2", "p29"]

    # a dry run reads the same ledger and writes nothing
    dry = run_cli(tmp_path, mock.base_url, east, "--ledger", pg_database, "--dry-run")
    assert dry.returncode == 0 and "would send 0" in dry.stdout, dry.stdout
    assert mock.stats("east").requests == 33


def test_a_dry_run_on_a_database_no_run_has_used_creates_nothing(pg_database: str) -> None:
    with open_ledger(pg_database, read_only=True) as ledger:
        assert ledger.last("https://east.example", "east", "/p1.json") is None
    with psycopg.connect(pg_database) as connection:
        assert connection.execute("SELECT to_regclass('shopline_ledger')").fetchone() == (None,)


def test_an_unreachable_database_is_a_clear_error_without_its_password(mock: MockShopline, tmp_path: Path) -> None:
    url = "postgresql://sync:hunter2-secret@127.0.0.1:1/catalog"
    assert ledger_name(url) == "postgresql://sync@127.0.0.1:1/catalog"
    with pytest.raises(LedgerError) as raised:
        PostgresLedger(url)
    assert "hunter2" not in str(raised.value) and str(raised.value).startswith("ledger postgresql://sync@127.0.0.1:1/")
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(2))
    refused = run_cli(tmp_path, mock.base_url, source, "--ledger", url)
    assert refused.returncode == 2 and "ledger postgresql://sync@127.0.0.1:1/catalog" in refused.stderr
    assert "hunter2" not in refused.stdout + refused.stderr
    assert mock.stats("east").requests == 0


def test_a_database_url_is_named_without_its_password_and_the_rerun_hint_leaves_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shopline_async._sync import rerun_command

    assert ledger_name("postgresql://sync:s3cret@db.example:5432/catalog?sslmode=require") == (
        "postgresql://sync@db.example:5432/catalog?sslmode=require"
    )
    assert ledger_name("postgres://db.example/catalog?user=sync&password=s3cret") == (
        "postgres://db.example/catalog?user=sync"
    )
    assert (
        ledger_name("postgresql://postgres:@/postgres?host=/tmp/pg") == "postgresql://postgres@/postgres?host=/tmp/pg"
    )
    assert ledger_name("./a.sqlite3") == "./a.sqlite3"
    url = "postgresql://sync:s3cret@db.example/catalog"
    monkeypatch.setattr(sys, "argv", ["shopline-async", "sync", "c.jsonl", "--ledger", url])
    hint = rerun_command()
    assert "s3cret" not in hint and "postgresql://sync@db.example/catalog" in hint and "PGPASSWORD" in hint


@pytest.mark.slow
def test_sigkill_mid_run_then_a_rerun_on_the_same_database_writes_everything_exactly(
    pg_database: str, tmp_path: Path
) -> None:
    n = 400
    writes, written_before, results = kill_mid_run_then_rerun_reordered(tmp_path, n, "--ledger", pg_database)
    assert set(writes) == {f"p{i}" for i in range(n)}  # every product written
    skipped = {r["product_id"] for r in results if r["outcome"] == "skipped"}
    assert skipped and skipped <= written_before  # nothing skipped that was not written
