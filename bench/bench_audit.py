"""Benchmark: what the audit trail costs: one SqliteJobStore.record_audit (the insert, the row-count
bound and, every 1000 inserts, the age bound), and reading a page back, with the table empty and
full (AUDIT_MAX_ROWS rows kept).

    python bench/bench_audit.py [--rows 100000] [--runs 2000] [--quick]

The store is a fresh SQLite job database (WAL, synchronous=NORMAL, as the monitor opens it) in a
temporary folder. The table is first filled to `--rows` through the store's own connection in
one transaction (rows shaped as the exporter records them), then `--runs` entries are recorded
one by one through `record_audit` (one transaction each, as the API does per control call), and
`audit_entries(limit=100)` pages are read, newest first and from the middle (`before`).

Goal: a recorded entry costs well under a millisecond next to the control call itself, flat
whether the table is empty or at its bound, and the table never holds more than the bound.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulletproof.audit import AUDIT_MAX_ROWS, AuditEntry  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402


def entry(i: int, now: float) -> AuditEntry:
    return AuditEntry(at=now + i * 1e-3, action="job.cancel" if i % 3 else "queue.pause",
                      method="POST", route="/api/v1/jobs/{id}/cancel", status=200, result="ok",
                      address=f"203.0.113.{i % 250}", principal_kind="grafana",
                      principal=f"user{i % 20}", role="Editor", job_id=i)


def fill(store: SqliteJobStore, rows: int) -> None:
    now = time.time() - 3600
    values = [(e.at, e.action, e.method, e.route, e.status, e.result, e.address,
               e.principal_kind, e.principal, e.role, e.job_id, e.code)
              for e in (entry(i, now) for i in range(rows))]
    db = store._db  # the bench fills fast; record_audit is what it times
    db.execute("BEGIN")
    db.executemany("INSERT INTO audit (at, action, method, route, status, result, address, "
                   "principal_kind, principal, role, job_id, code) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    db.execute("COMMIT")


def timed(call, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"p50 {statistics.median(samples):7.3f} ms  p99 {p99:7.3f} ms  max {samples[-1]:7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=AUDIT_MAX_ROWS,
                        help="rows in the table before the timed inserts (default: the bound)")
    parser.add_argument("--runs", type=int, default=2000, help="timed inserts and reads")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 200 runs")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs = 10_000, 200
    results = []
    with tempfile.TemporaryDirectory(prefix="bulletproof-bench-audit-") as tmp:
        for label, rows in (("empty table", 0), (f"{args.rows:,} rows", args.rows)):
            store = SqliteJobStore(Path(tmp) / f"audit-{rows}.db")
            fill(store, rows)
            now = time.time()
            inserts = timed(lambda i, s=store, t=now: s.record_audit(entry(i, t)), args.runs)
            newest = timed(lambda i, s=store: s.audit_entries(limit=100), args.runs)
            middle_id = max(1, store.audit_count() // 2)
            middle = timed(lambda i, s=store, m=middle_id: s.audit_entries(limit=100, before=m),
                           args.runs)
            kept = store.audit_count()
            store.close()
            results.append((label, inserts, newest, middle, kept))
    print(f"\naudit trail, {args.runs} runs each (bound: {AUDIT_MAX_ROWS:,} rows)")
    for label, inserts, newest, middle, kept in results:
        print(f"\n{label} -> {kept:,} rows kept")
        print(f"  record_audit            {summary(inserts)}")
        print(f"  page of 100, newest     {summary(newest)}")
        print(f"  page of 100, from middle {summary(middle)}")


if __name__ == "__main__":
    main()
