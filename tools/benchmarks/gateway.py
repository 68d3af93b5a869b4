"""Prints the gateway's added latency on the chat path and its throughput with budget enforcement on, then checks
the ledger for overspend. Runs on an embedded stack (model stub + gateway as child processes), once per database.

    scripts/bench-gateway [--database sqlite] [--database postgresql://postgres@127.0.0.1:5432/postgres]
                          [--workers 1] [--workers 2]
                          [--latency-samples 400] [--requests 4000] [--concurrency 16]
                          [--stream-samples 400] [--stream-requests 4000]

Measurements, per database, in this order (MEASUREMENTS; each is one function that prints its figures and
states its goals):
  1. latency: one keep-alive connection to the gateway and one straight to the stub, requests alternating, the same
     chat body; median and p99 of each and the difference (the gateway's added latency).
  2. streamed latency: as 1, with `"stream": true`: the time to the first token (the first event with text) and the
     time between chunks, through the gateway and straight from the stub, and what the gateway adds to each.
  3. throughput: `--requests` chat completions over `--concurrency` keep-alive connections; the org has a budget
     limit, so every request goes through the budget check, the hold and the finalize.
  4. streamed throughput: `--stream-requests` streamed completions over `--concurrency` connections, each read to
     its [DONE], budget enforced; then the ledger is checked for overspend, as in 6.
  5. exhaustion: the budget is lowered to what was spent plus 50 requests' worth, then 200 requests are sent at the
     same concurrency: at most 50 may be answered, the rest must be 402.
  6. ledger: straight from the database, the org's spend is within its limit, nothing is held, the spend equals the
     answered requests times their price, and the ledger's postings agree with the account's balances.
Goals on 2 cores: added median latency < 5 ms, >= 300 req/s on PostgreSQL, zero overspend; streamed: added median
time to first token < 5 ms, >= 200 streamed req/s on PostgreSQL, zero overspend.
`--workers N` (repeatable; PostgreSQL only above 1) runs each database's stack with the gateway in N worker
processes (GATEWAY_WORKERS); with 1 and 2 on PostgreSQL in one run it also prints the throughput ratio of 2 workers
to 1 (goal: at least 1.4x on 2 cores, which the load generator and the database share).
The load generator is a minimal asyncio HTTP/1.1 client, so that it takes as little of the 2 cores as it can.
CPU per request (throughput phase) is printed for each process: the gateway (and each worker), the model stub, the
load generator and PostgreSQL: "postgres" counts the bench database's connections and the server's background
processes, "every database on the server" also other runs' connections on a shared server. Throughput on a machine
shared with other work is noisy; the CPU figures are the steadier ones.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select

from support.client.keep_alive import Connection, spread
from tools.benchmarks.chat_client import COST, Setup
from tools.benchmarks import streaming
from tools.benchmarks.common import (POSTGRES_SERVER, DatabaseCpu, cpu_seconds, embedded_stack, label,
                                     load_average, machine_ticks, percentile, postgres_cpu_seconds)

EXHAUST_AFFORDABLE = 50
EXHAUST_REQUESTS = 200
LATENCY_WARMUP = 50


@dataclass
class Bench:
    """One database's run: what the measurements share, and the goals they state."""
    kind: str  # SQLite or PostgreSQL, and the gateway's worker processes when more than one
    args: argparse.Namespace
    setup: Setup
    pids: dict[str, int | None]  # the stack's processes (gateway, model-stub), for their CPU time
    limit: int  # the org's budget limit now
    answered: int = 0  # chat requests answered 200 so far
    throughput: float = 0.0  # req/s of the (non-streamed) throughput phase
    goals: list[tuple[str, bool]] = field(default_factory=list)

    def goal(self, text: str, met: bool) -> None:
        self.goals.append((text, met))


# ---- the measurements ----------------------------------------------------------------------------------------------

def measure_latency(bench: Bench) -> None:
    lat = asyncio.run(latency(bench.setup, bench.args.latency_samples, LATENCY_WARMUP))
    bench.answered += lat["answered"]
    print(f"latency, {bench.args.latency_samples} sequential requests each (ms): stub direct p50 "
          f"{lat['direct_p50']:.2f} p99 {lat['direct_p99']:.2f} | via gateway p50 {lat['gateway_p50']:.2f} p99 "
          f"{lat['gateway_p99']:.2f} | added p50 {lat['added_p50']:.2f} p99 {lat['added_p99']:.2f}", flush=True)
    bench.goal(f"added median latency {lat['added_p50']:.2f} ms < 5 ms", lat["added_p50"] < 5)


def measure_throughput(bench: Bench) -> None:
    requests = bench.args.requests
    before = {name: cpu_seconds(pid) for name, pid in bench.pids.items()}
    own_before, machine_before, pg_before = time.process_time(), machine_ticks(), postgres_cpu_seconds()
    database = DatabaseCpu(bench.setup.db.engine) if bench.kind.startswith("PostgreSQL") else None
    if database is not None:
        database.start()
    thr = asyncio.run(load(bench.setup, requests, bench.args.concurrency))
    bench.throughput = thr["rate"]
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1000 / requests for name, pid in bench.pids.items()}
    cpu["load generator"] = (time.process_time() - own_before) * 1000 / requests
    if database is not None:
        cpu["postgres"] = database.ms_per(requests)
        cpu["postgres, every database on the server"] = (postgres_cpu_seconds() - pg_before) * 1000 / requests
    machine_after = machine_ticks()
    busy = ((machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
            if machine_after[1] > machine_before[1] else float("nan"))
    bench.answered += thr["statuses"].get(200, 0)
    print(f"throughput, {requests} requests at concurrency {bench.args.concurrency}, budget enforced: "
          f"{thr['rate']:.0f} req/s (statuses {thr['statuses']}, p50 {thr['p50']:.1f} ms, p99 {thr['p99']:.1f} ms)")
    print(f"machine CPU busy in the throughput phase: {busy:.0%} of {os.cpu_count()} cores")
    print("CPU per request in the throughput phase (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
          + f"; load average now {load_average()} on {os.cpu_count()} cores", flush=True)
    if bench.kind.startswith("PostgreSQL"):
        bench.goal(f"throughput {thr['rate']:.0f} req/s >= 300", thr["rate"] >= 300)


def measure_streaming_latency(bench: Bench) -> None:
    lat = asyncio.run(streaming.first_token(bench.setup, bench.args.stream_samples, LATENCY_WARMUP))
    bench.answered += lat["answered"]
    print(f"streamed, {bench.args.stream_samples} sequential requests each (ms): time to first token stub direct p50 "
          f"{lat['ttft_direct_p50']:.2f} | via gateway p50 {lat['ttft_via_p50']:.2f} | added p50 "
          f"{lat['ttft_added_p50']:.2f} p99 {lat['ttft_added_p99']:.2f}; time per chunk stub direct p50 "
          f"{lat['chunk_direct_p50']:.3f} | via gateway p50 {lat['chunk_via_p50']:.3f} | added p50 "
          f"{lat['chunk_added_p50']:.3f} p99 {lat['chunk_added_p99']:.3f}", flush=True)
    bench.goal(f"added median time to first token {lat['ttft_added_p50']:.2f} ms < 5 ms", lat["ttft_added_p50"] < 5)


def measure_streaming_throughput(bench: Bench) -> None:
    requests = bench.args.stream_requests
    thr = asyncio.run(streaming.streamed_load(bench.setup, requests, bench.args.concurrency))
    bench.answered += thr["answered"]
    print(f"streamed throughput, {requests} streamed requests at concurrency {bench.args.concurrency}, budget "
          f"enforced: {thr['rate']:.0f} req/s (statuses {thr['statuses']})", flush=True)
    if bench.kind.startswith("PostgreSQL"):
        bench.goal(f"streamed throughput {thr['rate']:.0f} req/s >= 200", thr["rate"] >= 200)
    streaming.wait_settled(bench.setup)
    check_ledger(bench, "after the streamed load")


def measure_exhaustion(bench: Bench) -> None:
    bench.limit = bench.setup.usage()["spent_micros"] + EXHAUST_AFFORDABLE * COST
    bench.setup.set_budget(bench.limit)
    exh = asyncio.run(load(bench.setup, EXHAUST_REQUESTS, bench.args.concurrency))
    bench.answered += exh["statuses"].get(200, 0)
    print(f"exhaustion, budget left for {EXHAUST_AFFORDABLE}, {EXHAUST_REQUESTS} sent: statuses {exh['statuses']}",
          flush=True)
    bench.goal("every refusal in the exhaustion phase was 402",
               set(exh["statuses"]) <= {200, 402} and exh["statuses"].get(200, 0) <= EXHAUST_AFFORDABLE)


def check_ledger(bench: Bench, when: str = "at the end") -> None:
    check = ledger_check(bench.setup, bench.answered, bench.limit)
    print(f"ledger {when}: spent {check['spent']} of limit {check['limit']} micro-USD, {check['finalized']} finalize "
          f"entries for {bench.answered} answered; " + ("no overspend, ledger agrees" if not check["problems"]
                                                       else "PROBLEMS: " + "; ".join(check["problems"])), flush=True)
    bench.goal(f"zero overspend, ledger agrees {when}", not check["problems"])


MEASUREMENTS = (measure_latency, measure_streaming_latency, measure_throughput, measure_streaming_throughput,
                measure_exhaustion, check_ledger)


def planned_requests(args) -> int:
    """Chat requests the measurements send before the exhaustion phase (the budget and credit are sized by it)."""
    return args.latency_samples + LATENCY_WARMUP + args.requests + args.stream_samples + LATENCY_WARMUP + \
        args.stream_requests


# ---- the load ------------------------------------------------------------------------------------------------------

async def latency(setup: Setup, samples: int, warmup: int) -> dict:
    gateway = await Connection(setup.base).open()
    stub = await Connection(setup.stub_url).open()
    body = setup.body()
    auth = {"Authorization": f"Bearer {setup.key}"}
    via, direct = [], []
    try:
        for i in range(warmup + samples):
            t0 = time.perf_counter()
            status, _ = await gateway.post("/v1/chat/completions", body, auth)
            t1 = time.perf_counter()
            stub_status, _ = await stub.post(setup.stub_path, body, {})
            t2 = time.perf_counter()
            if status != 200 or stub_status != 200:
                raise SystemExit(f"bench: latency phase got gateway {status}, stub {stub_status}")
            if i >= warmup:
                via.append((t1 - t0) * 1000)
                direct.append((t2 - t1) * 1000)
    finally:
        gateway.close()
        stub.close()
    return {"answered": warmup + samples,
            "direct_p50": statistics.median(direct), "direct_p99": percentile(direct, 0.99),
            "gateway_p50": statistics.median(via), "gateway_p99": percentile(via, 0.99),
            "added_p50": statistics.median(via) - statistics.median(direct),
            "added_p99": percentile(via, 0.99) - percentile(direct, 0.99)}


async def load(setup: Setup, total: int, concurrency: int) -> dict:
    body = setup.body()
    auth = {"Authorization": f"Bearer {setup.key}"}
    statuses: dict[int, int] = {}
    latencies = []

    async def send(connection: Connection) -> None:
        t0 = time.perf_counter()
        status, _ = await connection.post("/v1/chat/completions", body, auth)
        latencies.append((time.perf_counter() - t0) * 1000)
        statuses[status] = statuses.get(status, 0) + 1

    elapsed = await spread(setup.base, total, concurrency, send)
    return {"statuses": statuses, "elapsed": elapsed, "rate": total / elapsed,
            "p50": statistics.median(latencies), "p99": percentile(latencies, 0.99)}


def ledger_check(setup: Setup, answered: int, limit: int) -> dict:
    db = setup.db
    accounts, postings, reservations, entries = (db.table(n) for n in ("accounts", "ledger_postings", "reservations",
                                                                        "ledger_entries"))
    with db.engine.connect() as conn:
        account = conn.execute(select(accounts).where(accounts.c.id == setup.account_id)).mappings().one()
        buckets = dict(conn.execute(select(postings.c.bucket, func.sum(postings.c.amount_micros))
                                    .where(postings.c.account_id == setup.account_id)
                                    .group_by(postings.c.bucket)).all())
        pending = conn.scalar(select(func.count()).select_from(reservations).where(
            reservations.c.account_id == setup.account_id, reservations.c.status == "pending"))
        finalized = conn.scalar(select(func.count()).select_from(entries).where(
            entries.c.account_id == setup.account_id, entries.c.kind == "finalize"))
    problems = []
    if account["spent_micros"] + account["held_micros"] > limit:
        problems.append(f"OVERSPEND: spent {account['spent_micros']} + held {account['held_micros']} > limit {limit}")
    if account["spent_micros"] != answered * COST:
        problems.append(f"spent {account['spent_micros']} != {answered} answered x {COST}")
    if finalized != answered:
        problems.append(f"{finalized} finalize entries for {answered} answered requests")
    if pending or account["held_micros"]:
        problems.append(f"{pending} reservations still pending, {account['held_micros']} held")
    for bucket in ("available", "held", "spent"):
        if int(buckets.get(bucket) or 0) != account[f"{bucket}_micros"]:
            problems.append(f"ledger {bucket} {buckets.get(bucket)} != account {account[f'{bucket}_micros']}")
    return {"spent": account["spent_micros"], "limit": limit, "finalized": finalized, "problems": problems}


# ---- per database, and main ------------------------------------------------------------------------------------------

def run(database: str, workers: int, args) -> Bench:
    with embedded_stack(database, gateway_workers=str(workers)) as (stack, endpoints):
        setup = Setup(endpoints, "sqlite" if database == "sqlite" else "pg")
        budget = 2 * planned_requests(args) * COST
        setup.run(budget_micros=budget, credit_micros=2 * budget)
        processes = getattr(stack, "processes", {})
        pids = {name: getattr(getattr(processes.get(name), "process", None), "pid", None)
                for name in ("gateway", "model-stub")}
        pids.update({f"gateway worker {n}": pid for n, pid in enumerate(worker_pids(pids["gateway"]), 1)})
        kind = label(database) + (f", {workers} gateway workers" if workers > 1 else "")
        bench = Bench(kind, args, setup, pids, limit=budget)
        print(f"\n== {bench.kind} ==", flush=True)
        try:
            for measure in MEASUREMENTS:
                measure(bench)
        finally:
            setup.db.dispose()
    return bench


def worker_pids(pid: int | None) -> list[int]:
    """The gateway's worker processes (uvicorn's children that serve; none with one process). Linux /proc."""
    try:
        children = [int(c) for t in os.listdir(f"/proc/{pid}/task")
                    for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
    except (OSError, TypeError, ValueError):
        return []
    own = open(f"/proc/{pid}/cmdline").read()  # workers are forked from it (gateway/reuse_port.py): its command line
    return [c for c in children if open(f"/proc/{c}/cmdline").read() == own]


def workers_ratio(benches: list[Bench], workers: list[int]) -> None:
    """With 1 and 2 workers on PostgreSQL in this run: 2 workers' throughput over 1's, and its goal."""
    by_workers = dict(zip(workers, [b for b in benches if b.kind.startswith("PostgreSQL")][:len(workers)]))
    if 1 in by_workers and 2 in by_workers and by_workers[1].throughput:
        ratio = by_workers[2].throughput / by_workers[1].throughput
        print(f"PostgreSQL throughput, 2 workers over 1: {by_workers[2].throughput:.0f} / "
              f"{by_workers[1].throughput:.0f} req/s = {ratio:.2f}x")
        by_workers[2].goal(f"2 workers give {ratio:.2f}x the throughput of 1 (>= 1.4x)", ratio >= 1.4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--database", action="append",
                        help="sqlite, or a PostgreSQL server URL (a fresh database is made and dropped); repeatable")
    parser.add_argument("--workers", action="append", type=int,
                        help="the gateway's worker processes (above 1: PostgreSQL only); repeatable")
    parser.add_argument("--latency-samples", type=int, default=400)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream-samples", type=int, default=400)
    parser.add_argument("--stream-requests", type=int, default=4000)
    args = parser.parse_args(argv)
    workers = args.workers or [1]
    benches = [run(database, n, args) for database in args.database or ["sqlite", POSTGRES_SERVER]
               for n in workers if n == 1 or database != "sqlite"]
    workers_ratio(benches, workers)
    print("\n== goals ==")
    for bench in benches:
        for text, met in bench.goals:
            print(f"{bench.kind}: {'met   ' if met else 'MISSED'} {text}")
    return 0 if all(met for bench in benches for _, met in bench.goals) else 1


if __name__ == "__main__":
    sys.exit(main())
