"""The shopline-async command, in process and as a subprocess, against a mock server in a thread."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from shopline_async import ImageInput, ProductUpdate, Progress
from shopline_async._sync import SyncJob
from shopline_async.cli import build_parser, main
from shopline_async.mock import MockShopline, MockStoreConfig

TOKENS = {"cli-secret-token-east-123": "east", "cli-secret-token-west-456": "west"}


class ThreadedMock:
    """The mock server on its own loop in a thread, so the CLI can run its own asyncio.run()."""

    def __init__(self, config: MockStoreConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = MockShopline(TOKENS, config=config)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> MockShopline:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result()
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default ledger is a file in the current directory


@pytest.fixture
def mock() -> Iterator[MockShopline]:
    with ThreadedMock(MockStoreConfig(rate=None)) as server:
        yield server


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "stores.json"
    path.write_text(json.dumps({"stores": {h: {"token": t} for t, h in TOKENS.items()}}))
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def product_rows(n: int, store: str = "east") -> list[dict[str, Any]]:
    return [
        {"store": store, "key": f"{store}-{i}", "product_id": f"p{i}", "product": {"title": f"T{i}"}} for i in range(n)
    ]


def sync(*args: str) -> int:
    """``sync`` in process; paced as fast as the mock answers (pacing has tests of its own)."""
    return main(["sync", *args, "--progress", "never", *(() if "--rate" in args else ("--rate", "1000"))])


def test_jsonl_sync_products_and_images(mock: MockShopline, config_file: Path, tmp_path: Path, capsys) -> None:
    mock.seed("west", "w1", ProductUpdate(images=[ImageInput(id="img-1", src="https://i/1")]))
    rows = product_rows(20, "east") + product_rows(10, "west")
    rows.append({"store": "west", "product_id": "w1", "image_id": "img-1", "image": {"alt": "Front", "position": 1}})
    source = write_jsonl(tmp_path / "catalog.jsonl", rows)
    code = sync(str(source), "--config", str(config_file), "--base-url", mock.base_url)
    assert code == 0
    results = read_results(tmp_path / "catalog.jsonl.results.jsonl")
    assert len(results) == 31 and all(r["ok"] for r in results)
    assert sorted(r["line"] for r in results) == list(range(1, 32))
    assert all(r["trace_id"] and r["trace_ids"][-1] == r["trace_id"] for r in results)
    by_line = {r["line"]: r for r in results}
    assert (by_line[1]["product_id"], by_line[31]["product_id"], by_line[31]["image_id"]) == ("p0", "w1", "img-1")
    assert "image_id" not in by_line[1]  # a product row names its product only
    assert mock.stats("east").writes.total() == 20 and mock.stats("west").writes.total() == 11
    assert mock.product("west", "w1")["images"][0]["alt"] == "Front"  # type: ignore[index]
    out = capsys.readouterr().out
    assert "Done: 31 operations" in out and "31 ok, 0 not ok" in out and str(tmp_path) in out


def test_csv_sync(mock: MockShopline, tmp_path: Path) -> None:
    source = tmp_path / "catalog.csv"
    source.write_text(
        "product_id,title,status,vendor,tags,sku,price,inventory_tracker,weight,weight_unit\n"
        'c1,Shirt,active,Acme,"linen, summer",S-1,19.9,false,0.5,kg\n'
        "c2,Trousers,,,,,,,,\n"
    )
    os.environ["SHOPLINE_ACCESS_TOKEN"] = "cli-secret-token-east-123"
    try:
        code = sync(str(source), "--store", "east", "--base-url", mock.base_url)
    finally:
        del os.environ["SHOPLINE_ACCESS_TOKEN"]
    assert code == 0
    shirt = mock.product("east", "c1")
    assert shirt is not None
    assert (shirt["title"], shirt["status"], shirt["vendor"], shirt["tags"]) == (
        "Shirt",
        "active",
        "Acme",
        "linen,summer",
    )
    variant = shirt["variants"][0]
    assert (variant["sku"], variant["price"], variant["inventory_tracker"], variant["weight"]) == (
        "S-1",
        "19.90",
        False,
        "0.50",
    )
    assert mock.product("east", "c2")["status"] == "draft"  # type: ignore[index]  # empty cells: unchanged


def test_invalid_rows_are_recorded_and_skipped(mock: MockShopline, config_file: Path, tmp_path: Path, capsys) -> None:
    rows: list[Any] = product_rows(3)
    rows.insert(1, '{"store": "east", "product_id": "broken", "product": {')
    rows.insert(3, {"store": "east", "product_id": "x", "product": {"variants": [{"price": "-1.5"}]}})
    rows.append({"store": "east", "product_id": "y", "product": {"titel": "typo"}})
    rows.append({"store": "mars", "product_id": "z", "product": {}})
    rows.append({"store": "east", "product_id": "i", "image": {"alt": "no image id"}})
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url) == 1
    results = {r["line"]: r for r in read_results(tmp_path / "c.jsonl.results.jsonl")}
    assert len(results) == len(rows)
    assert [line for line, r in sorted(results.items()) if r["ok"]] == [1, 3, 5]
    assert "not valid JSON" in results[2]["error"]
    assert results[4]["error"] == "$.product.variants[0].price: must not be negative, got '-1.5'"
    assert "unknown field `titel`" in results[6]["error"] and "$.product" in results[6]["error"]
    assert "unknown store 'mars'" in results[7]["error"]
    assert "$.image_id" in results[8]["error"]
    assert all(r["outcome"] == "invalid" for line, r in results.items() if line not in (1, 3, 5))
    assert mock.stats("east").requests == 3
    assert "not ok by reason: invalid 5" in capsys.readouterr().out


def test_dry_run_sends_nothing_and_lists_bad_rows(
    mock: MockShopline, config_file: Path, tmp_path: Path, capsys
) -> None:
    rows: list[Any] = product_rows(4)
    rows[2] = {"store": "east", "product_id": "p", "product": {"title": "x" * 300}}
    rows.append({"store": "west", "product_id": "q", "product": {"variants": [{"weight": "0"}]}})
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    assert sync(str(source), "--dry-run", "--config", str(config_file), "--base-url", mock.base_url) == 1
    out = capsys.readouterr().out
    assert "line 3: $.product.title: Expected `str` of length <= 255" in out
    assert "line 5: $.product.variants[0].weight: must be greater than 0" in out
    assert "dry run, nothing sent (no ledger yet: every valid row would be sent):" in out
    assert "  store east: would send 3, unchanged 0, invalid 1" in out
    assert "  store west: would send 0, unchanged 0, invalid 1" in out
    assert "5 rows checked: would send 3, unchanged 0, invalid 2" in out
    assert mock.stats("east").requests == 0 and not (tmp_path / "c.jsonl.results.jsonl").exists()
    assert not (tmp_path / "shopline-sync.ledger.sqlite3").exists()  # a dry run creates no ledger
    good = write_jsonl(tmp_path / "good.jsonl", product_rows(3))
    assert sync(str(good), "--dry-run", "--store", "east") == 0  # no token needed to validate


def test_dry_run_plans_from_the_ledger_what_a_run_would_send(
    mock: MockShopline, config_file: Path, tmp_path: Path, capsys
) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(4, "east") + product_rows(2, "west"))
    assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url) == 0
    rows = product_rows(4, "east") + product_rows(2, "west")
    rows[1]["product"]["title"] = "changed"
    rows.append({"store": "east", "product_id": "p1", "product": {"title": "changed"}})  # the same again
    rows.append({"store": "east", "product_id": "p0", "product": {"title": "T0-new"}})
    changed = write_jsonl(tmp_path / "changed.jsonl", rows)
    capsys.readouterr()
    requests_before = mock.stats("east").requests
    assert sync(str(changed), "--dry-run", "--config", str(config_file), "--base-url", mock.base_url) == 0
    out = capsys.readouterr().out
    assert "  store east: would send 2, unchanged 4, invalid 0" in out  # p1 once, then unchanged; p0's new title
    assert "  store west: would send 0, unchanged 2, invalid 0" in out
    assert mock.stats("east").requests == requests_before
    assert sync(str(changed), "--config", str(config_file), "--base-url", mock.base_url) == 0
    assert mock.stats("east").requests == requests_before + 2  # the run does as the plan said


def test_resume_redoes_only_what_did_not_succeed(mock: MockShopline, tmp_path: Path, capsys) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(10, "east") + product_rows(10, "west"))
    half_config = tmp_path / "half.json"
    half_config.write_text(json.dumps({"stores": {"east": {"token": "cli-secret-token-east-123"}, "west": "wrong"}}))
    # paced, so that the first 401 is back before the store's next request would leave
    assert sync(str(source), "--config", str(half_config), "--base-url", mock.base_url, "--rate", "40") == 1
    assert re.search(r"store west answered HTTP 401 \(traceId=\S+\): \d+ rows not sent to it", capsys.readouterr().out)
    first = read_results(tmp_path / "c.jsonl.results.jsonl")
    assert sum(r["ok"] for r in first) == 10 and {r["status"] for r in first if not r["ok"]} == {401}

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"stores": {h: t for t, h in TOKENS.items()}}))
    assert sync(str(source), "--config", str(fixed), "--base-url", mock.base_url) == 0
    second = read_results(tmp_path / "c.jsonl.results.jsonl")
    assert len(second) == 20 and all(r["ok"] for r in second)  # one line per row, every run
    unchanged = [r for r in second if r["outcome"] == "skipped"]
    assert {r["key"] for r in unchanged} == {f"east-{i}" for i in range(10)}
    assert all(r["reason"] == "unchanged" and r["status"] == 200 and r["trace_id"] for r in unchanged)
    assert mock.stats("east").writes == {f"p{i}": 1 for i in range(10)}  # no success redone
    assert mock.stats("west").writes == {f"p{i}": 1 for i in range(10)}


def test_exit_code_2_for_usage_and_unreadable_input(mock: MockShopline, tmp_path: Path, capsys) -> None:
    good = write_jsonl(tmp_path / "c.jsonl", product_rows(1))
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("product_id,colour\n1,red\n")
    bad_config = tmp_path / "bad.json"
    bad_config.write_text("[1, 2]")
    assert sync(str(tmp_path / "missing.jsonl"), "--store", "east", "--token", "t") == 2
    assert sync(str(good)) == 2  # no store
    assert sync(str(good), "--store", "east") == 2  # no token
    assert sync(str(bad_csv), "--store", "east", "--token", "t", "--base-url", mock.base_url) == 2
    assert sync(str(good), "--config", str(bad_config)) == 2
    assert sync(str(good), "--store", "not.a.handle", "--token", "t") == 2
    err = capsys.readouterr().err
    assert "unknown columns 'colour'" in err and "no access token for store 'east'" in err
    with pytest.raises(SystemExit) as exc:
        main(["sync"])
    assert exc.value.code == 2


def test_token_never_in_output_or_results(mock: MockShopline, tmp_path: Path, capsys) -> None:
    token = "cli-secret-token-east-123"
    rows = [*product_rows(3), {"store": "east", "product_id": "x", "image_id": "nope", "image": {"alt": "a"}}]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    assert sync(str(source), "--store", "east", "--token", token, "--base-url", mock.base_url) == 1
    assert sync(str(source), "--store", "east", "--token", token + "\n", "--base-url", mock.base_url) == 2
    assert sync(str(source), "--store", "east", "--token", "wrong-" + token, "--base-url", mock.base_url) == 1
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, (tmp_path / "c.jsonl.results.jsonl").read_text()):
        assert token not in text


@pytest.mark.parametrize("command", [[], ["sync"], ["demo"], ["mock-server"]])
def test_help_is_complete(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    expected = {
        (): ["sync", "demo", "mock-server"],
        ("sync",): [
            "--store",
            "--token",
            "--config",
            "--base-url",
            "--rate",
            "--burst",
            "--concurrency",
            "--results",
            "--ledger",
            "--no-ledger",
            "--full",
            "--resume",
            "--dry-run",
            "SHOPLINE_ACCESS_TOKEN",
            "exit codes",
            "product_id",
        ],
        ("demo",): ["--dir"],
        ("mock-server",): ["--port", "--rate", "--burst", "--mode", "--stores", "--seed", "--error-rate"],
    }[tuple(command)]
    for word in expected:
        assert word in out


def test_every_option_of_every_command_says_what_it_does() -> None:
    def undocumented(parser: argparse.ArgumentParser, name: str) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command, sub in action.choices.items():
                    yield from undocumented(sub, f"{name} {command}")
            elif action.option_strings and not action.help:
                yield f"{name} {action.option_strings[-1]}"

    assert list(undocumented(build_parser(), "shopline-async")) == []


@pytest.mark.slow
def test_demo_runs(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--dir", str(tmp_path), "--progress", "never"]) == 0
    out = capsys.readouterr().out
    assert "Done: 505 operations" in out and "500 ok, 5 not ok" in out
    assert "The mock server accepted 500 writes" in out
    results = read_results(tmp_path / "catalog.jsonl.results.jsonl")
    assert len(results) == 505 and sum(r["ok"] for r in results) == 500


@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path: Path) -> None:
    with ThreadedMock(MockStoreConfig(rate=40, capacity=5)) as server:
        source = write_jsonl(tmp_path / "c.jsonl", product_rows(150))
        args = [
            sys.executable,
            "-m",
            "shopline_async.cli",
            "sync",
            str(source),
            "--store",
            "east",
            "--base-url",
            server.base_url,
            "--rate",
            "40",
            "--burst",
            "5",
            # this server's bucket holds 5, not SHOPLINE's 40: at most 5 in flight, so that even the
            # resume below at a --rate the bucket cannot serve never overflows it
            "--max-in-flight",
            "5",
            "--progress",
            "never",
        ]
        env = {**os.environ, "SHOPLINE_ACCESS_TOKEN": "cli-secret-token-east-123"}
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        results_path = tmp_path / "c.jsonl.results.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not results_path.exists() or len(results_path.read_text()) < 2000):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Interrupted" in out and "stopping" in err
        first = read_results(results_path)
        keys = [r["key"] for r in first]
        assert len(keys) == len(set(keys))  # consistent: one line per taken row
        done = {r["key"] for r in first if r["ok"]}
        assert 10 < len(done) < 150
        assert {r["outcome"] for r in first} <= {"ok", "not_attempted"}
        not_attempted = sum(r["outcome"] == "not_attempted" for r in first)
        assert f"{not_attempted:,} rows not attempted; the same command sends them" in out, out
        # the hint's next line is the command to run again (the console script when installed, else -m)
        lines = out.splitlines()
        hint = lines[next(i for i, line in enumerate(lines) if "the same command" in line) + 1]
        printed = shlex.split(hint)
        assert printed[-len(args[3:]) :] == args[3:], hint
        writes_before = dict(server.stats("east").writes)
        assert sum(writes_before.values()) == len(done)

        rerun = subprocess.run([*printed, "--rate", "200"], env=env, capture_output=True, timeout=60, cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        final = read_results(results_path)
        assert {r["key"] for r in final if r["ok"]} == {f"east-{i}" for i in range(150)}
        assert {r["key"] for r in final if r["outcome"] == "skipped"} == done
        assert server.stats("east").writes == {f"p{i}": 1 for i in range(150)}  # nothing done twice


def test_progress_bar_knows_the_total(mock: MockShopline, config_file: Path, tmp_path: Path, capsys) -> None:
    rows: list[Any] = [*product_rows(12), "not json"]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    args = [
        "sync",
        str(source),
        "--config",
        str(config_file),
        "--base-url",
        mock.base_url,
        "--progress",
        "always",
        "--rate",
        "1000",
    ]
    assert main(args) == 1
    final = capsys.readouterr().err.rstrip("\n").split("\r")[-1]
    assert re.fullmatch(r"\[#{30}\] 13/13 ok 12 failed 1 in flight 0  [0-9,.]+/s\s*", final), final  # done: no ETA


def test_the_progress_bar_says_the_rate_and_when_it_will_be_done() -> None:
    job = SyncJob(progress_stream=io.StringIO(), expected_rows=1000)
    job._started -= 10  # ten seconds in
    job.draw_progress(Progress(taken=300, done=240, failed=10, in_flight=40))
    line = job.progress_stream.getvalue()  # type: ignore[union-attr]
    assert "250/1000 ok 240 failed 10 in flight 40  25.0/s  ETA 0:30" in line  # 750 left at 25/s


def test_an_unset_token_env_names_the_variable_and_the_store(tmp_path: Path, capsys) -> None:
    config = tmp_path / "stores.json"
    config.write_text(json.dumps({"stores": {"shop2": {"token_env": "SHOP2_TOKEN_NOT_SET_ANYWHERE"}}}))
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(1, "shop2"))
    assert sync(str(source), "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert "'shop2'" in err and "$SHOP2_TOKEN_NOT_SET_ANYWHERE is not set" in err


def test_plain_http_to_a_remote_host_offers_the_cli_switch(tmp_path: Path, capsys) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(1))
    assert sync(str(source), "--store", "east", "--token", "t", "--base-url", "http://example.com") == 2
    err = capsys.readouterr().err
    assert "--allow-insecure-http" in err and "allow_insecure_http" not in err


@pytest.mark.slow
@pytest.mark.parametrize("how", ["env", "flag"])
def test_logging_is_switched_on_by_shopline_log_or_the_flag_and_never_shows_the_token(
    mock: MockShopline, tmp_path: Path, how: str
) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(3))
    token = "cli-secret-token-east-123"
    args = [sys.executable, "-m", "shopline_async.cli", "sync", str(source), "--store", "east"]
    args += ["--base-url", mock.base_url, "--progress", "never", "--unlimited"]
    env = {**os.environ, "SHOPLINE_ACCESS_TOKEN": token}
    env.pop("SHOPLINE_LOG", None)
    if how == "env":
        env["SHOPLINE_LOG"] = "debug"
    else:
        args += ["--log-level", "debug"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "DEBUG shopline_async" in done.stderr and "PUT" in done.stderr
    assert token not in done.stderr + done.stdout


def test_integer_ids_are_taken_and_a_row_that_cannot_be_read_keeps_its_store(
    mock: MockShopline, config_file: Path, tmp_path: Path
) -> None:
    rows: list[Any] = [
        {"store": "east", "product_id": 123, "product": {"title": "int id"}},
        {"store": "west", "key": "bad", "product_id": "p1", "product": {"title": 5}},
    ]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url) == 1
    results = read_results(tmp_path / "c.jsonl.results.jsonl")
    assert mock.stats("east").writes == {"123": 1}
    bad = next(r for r in results if r["outcome"] == "invalid")
    assert bad["store"] == "west" and bad["key"] == "bad" and "$.product.title" in bad["error"]


def test_a_jsonl_row_reports_every_problem_of_its_update(mock: MockShopline, config_file: Path, tmp_path: Path) -> None:
    row = {"store": "east", "product_id": "p1", "product": {"title": 5, "status": "live", "variants": [{"sku": 1}]}}
    source = write_jsonl(tmp_path / "c.jsonl", [row])
    assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url) == 1
    error = read_results(tmp_path / "c.jsonl.results.jsonl")[0]["error"]
    assert all(p in error for p in ("$.product.title", "$.product.status", "$.product.variants[0].sku")), error


def test_csv_takes_all_five_options(mock: MockShopline, config_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_text("product_id,store,option4,option5\np1,east,short,casual\n")
    assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url) == 0
    variant = mock.product("east", "p1")["variants"][0]
    assert (variant["option4"], variant["option5"]) == ("short", "casual")


@pytest.mark.slow
def test_after_a_double_ctrl_c_the_summary_counts_every_row_recorded(tmp_path: Path) -> None:
    from shopline_async.mock import Faults

    with ThreadedMock(MockStoreConfig(rate=None, faults=Faults(latency_rate=1.0, latency=0.3))) as server:
        source = write_jsonl(tmp_path / "c.jsonl", product_rows(300))
        args = [sys.executable, "-m", "shopline_async.cli", "sync", str(source), "--store", "east"]
        args += ["--base-url", server.base_url, "--progress", "never", "--unlimited", "--concurrency", "20"]
        env = {**os.environ, "SHOPLINE_ACCESS_TOKEN": "cli-secret-token-east-123"}
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results_path = tmp_path / "c.jsonl.results.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not results_path.exists() or not results_path.read_text()):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        lines = read_results(results_path)
        not_attempted = sum(r["outcome"] == "not_attempted" for r in lines)
        assert f"Interrupted: {len(lines) - not_attempted:,} operations" in out, out  # those attempted
        assert {r["outcome"] for r in lines} >= {"ok", "cancelled"}


def every_command(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_command(sub, (*path, name))


def parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("path", list(every_command(build_parser())), ids=lambda p: " ".join(p) or "-")
def test_every_command_has_a_description_examples_and_every_option_described(path: tuple[str, ...]) -> None:
    parser = parser_of(path)
    text = parser.format_help()
    assert parser.description, path
    examples = text.split("examples:\n", 1)[1] if "examples:\n" in text else ""
    assert examples.startswith("  shopline-async " + " ".join(path)), text  # examples of this very command
    for action in parser._actions:
        assert action.help and action.help is not argparse.SUPPRESS, (path, action.option_strings)
    assert not parser.allow_abbrev


def test_an_abbreviated_option_is_an_error_not_a_guess(tmp_path: Path, capsys) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(1))
    with pytest.raises(SystemExit) as exit:
        main(["sync", str(source), "--stor", "east", "--dry-run"])
    assert exit.value.code == 2 and "unrecognized arguments: --stor" in capsys.readouterr().err


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        self.received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_sync_exports_traces_and_metrics_with_otel(
    mock: MockShopline, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="--otel needs the [otlp] extra")
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(3))
    try:
        assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url, "--otel") == 0
    finally:
        collector.shutdown()
        collector.server_close()
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces", "/v1/metrics"}
    traces = b"".join(body for path, body in _Collector.received if path == "/v1/traces")
    for name in (b"shopline.sync", b"shopline.batch", b"shopline.update_product", b"PUT", b"shopline.trace_id"):
        assert name in traces
    metrics = b"".join(body for path, body in _Collector.received if path == "/v1/metrics")
    assert b"http.client.request.duration" in metrics and b"shopline.operations" in metrics
    for token in TOKENS:
        assert token.encode() not in traces + metrics


def test_otel_without_its_extra_says_what_to_install(
    mock: MockShopline, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    source = write_jsonl(tmp_path / "c.jsonl", product_rows(1))
    assert sync(str(source), "--config", str(config_file), "--base-url", mock.base_url, "--otel") == 2
    assert "pip install 'shopline-async[otlp]'" in capsys.readouterr().err
