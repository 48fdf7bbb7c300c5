"""JobQueries: the read side of the job stores (lookups, the queue order, lists, statistics), in portable SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bulletproof.errors import JobNotFound
from bulletproof.models import JOB_FIELDS, Job, JobState

# The SELECT list of a job: the Job record's fields, nothing spelled twice.
# Columns every store's jobs table has beyond the Job's fields: the queue order and the claim.
INTERNAL_COLUMNS: tuple[str, ...] = ("seq", "claim_token", "lease_until")
# Every column of a job row, as a history copy moves it between stores.
STORED_COLUMNS: tuple[str, ...] = (*JOB_FIELDS, *INTERNAL_COLUMNS)
COLUMNS = ", ".join(JOB_FIELDS)

# SORT_KEYS (bulletproof.store) as SQL expressions.
SORT_EXPRESSIONS = {
    "created": "created_at",
    "finished": "finished_at",
    "started": "started_at",
    "duration": "(finished_at - started_at)",
    "size": "input_bytes",
    "id": "id",
}
_NULLABLE_SORTS = frozenset({"finished", "started", "duration", "size"})

# Runs one read with `?` placeholders; rows are read by position and by column name.
Query = Callable[[str, Iterable[Any]], list[Any]]


def within_prefixes(prefixes: Sequence[str] | None, mark: str = "?") -> tuple[str, list[Any]]:
    """An ` AND ...` condition keeping jobs whose source and output paths, as stored, start with
    one of `prefixes` (a job with no output path yet passes), and its parameters; nothing for
    None. A node passes the prefixes of the paths it can resolve (`PathMap.claim_prefixes`)."""
    if prefixes is None:
        return "", []
    if not prefixes:
        return " AND 1 = 0", []

    def starts(column: str) -> str:
        return "(" + " OR ".join(f"substr({column}, 1, {mark}) = {mark}" for _ in prefixes) + ")"

    pairs = [value for prefix in prefixes for value in (len(prefix), prefix)]
    return (f" AND {starts('source_path')} AND (output_path = '' OR {starts('output_path')})",
            pairs + pairs)


class JobQueries:
    """Read-only queries over the jobs table, run through the store's `query` function."""

    # The history bucket of a finish time (never before `since`, so truncating is flooring).
    BUCKET = "CAST((finished_at - ?) / ? AS INTEGER)"

    def __init__(self, query: Query) -> None:
        self._query = query

    def get(self, job_id: int) -> Job:
        """One job by id."""
        rows = self._query(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return Job.from_record(dict(rows[0]))

    def find(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """The newest job for exactly this version of a file, if any."""
        rows = self._query(
            f"SELECT {COLUMNS} FROM jobs WHERE source_path = ? AND size = ? AND mtime_ns = ? "
            "ORDER BY id DESC LIMIT 1",
            (source_path, size, mtime_ns),
        )
        return Job.from_record(dict(rows[0])) if rows else None

    def unfinished_job(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """A job of exactly this version of a file that has not finished (queued, running, paused)."""
        rows = self._query(
            f"SELECT {COLUMNS} FROM jobs WHERE source_path = ? AND size = ? AND mtime_ns = ? "
            "AND state IN ('queued', 'processing', 'paused') ORDER BY id LIMIT 1",
            (source_path, size, mtime_ns),
        )
        return Job.from_record(dict(rows[0])) if rows else None

    def seen(self, source_path: str, size: int, mtime_ns: int) -> bool:
        """True when this version of a file has a job, or had one that completed or was skipped
        (`done_files` outlives deleting the job): what the stores' insert checks."""
        rows = self._query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE source_path = ? AND size = ? "
            "AND mtime_ns = ?) OR EXISTS (SELECT 1 FROM done_files WHERE source_path = ? "
            "AND size = ? AND mtime_ns = ?) THEN 1 ELSE 0 END",
            (source_path, size, mtime_ns) * 2,
        )
        return bool(rows[0][0])

    def next_queued(self, *, now: float, within: Sequence[str] | None = None) -> Job | None:
        """The job a free worker should take now (FIFO within priority, honouring backoff;
        `within`: of those whose paths start so, see `within_prefixes`)."""
        only, params = within_prefixes(within)
        rows = self._query(
            f"SELECT {COLUMNS} FROM jobs WHERE state = 'queued' "
            f"AND (not_before IS NULL OR not_before <= ?){only} ORDER BY priority DESC, seq LIMIT 1",
            (now, *params),
        )
        return Job.from_record(dict(rows[0])) if rows else None

    def next_wakeup(self) -> float | None:
        """The earliest time a backed-off queued job becomes runnable."""
        rows = self._query("SELECT MIN(not_before) FROM jobs WHERE state = 'queued'", ())
        return rows[0][0]

    def queued(self, limit: int = 1000, offset: int = 0) -> list[Job]:
        """Queued jobs in the order they will run."""
        rows = self._query(
            f"SELECT {COLUMNS} FROM jobs WHERE state = 'queued' "
            "ORDER BY priority DESC, seq LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [Job.from_record(dict(r)) for r in rows]

    def list_jobs(
        self,
        *,
        states: list[JobState] | None = None,
        profile: str | None = None,
        search: str | None = None,
        since: float | None = None,
        until: float | None = None,
        sort: str = "created",
        descending: bool = True,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """A filtered, sorted page of jobs and the total matching count."""
        where: list[str] = []
        params: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += [s.value for s in states]
        if profile:
            where.append("profile = ?")
            params.append(profile)
        if search:
            where.append("rel_path LIKE ? ESCAPE '\\'")
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        if since is not None:
            where.append("COALESCE(finished_at, created_at) >= ?")
            params.append(since)
        if until is not None:
            where.append("COALESCE(finished_at, created_at) < ?")
            params.append(until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        column = SORT_EXPRESSIONS[sort]
        direction = "DESC" if descending else "ASC"
        # Unfinished jobs have no finish time: they sort last either way. The extra term would
        # keep SQLite from walking an index, so only nullable sort keys get it.
        nulls_last = f"{column} IS NULL, " if sort in _NULLABLE_SORTS else ""
        total = self._query(f"SELECT COUNT(*) FROM jobs {clause}", params)[0][0]
        rows = self._query(
            f"SELECT {COLUMNS} FROM jobs {clause} "
            f"ORDER BY {nulls_last}{column} {direction}, id {direction} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [Job.from_record(dict(r)) for r in rows], total

    def counts_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        counts = dict.fromkeys(JobState, 0)
        for state, count in self._query("SELECT state, n FROM job_counts", ()):
            counts[JobState(state)] = count
        return counts

    def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was queued."""
        return self._query("SELECT MIN(queued_at) FROM jobs WHERE state = 'queued'", ())[0][0]

    def last_finished_at(self) -> dict[JobState, float | None]:
        """The latest finish time per terminal state (one index lookup each)."""
        row = self._query(
            "SELECT (SELECT MAX(finished_at) FROM jobs WHERE state = 'completed'), "
            "(SELECT MAX(finished_at) FROM jobs WHERE state = 'failed'), "
            "(SELECT MAX(finished_at) FROM jobs WHERE state = 'cancelled'), "
            "(SELECT MAX(finished_at) FROM jobs WHERE state = 'skipped')", ())[0]
        return {JobState.COMPLETED: row[0], JobState.FAILED: row[1], JobState.CANCELLED: row[2],
                JobState.SKIPPED: row[3]}

    def summary(self, *, now: float) -> dict[str, Any]:
        """The statistics summary: totals, average duration, space saved, the last 24 h by hour."""
        counts = self.counts_by_state()
        # Covered by the (state, finished_at, started_at) index: no table rows are read.
        avg = self._query(
            "SELECT AVG(finished_at - started_at) FROM jobs WHERE state = 'completed'", ())[0][0]
        return {
            "total_jobs": sum(counts.values()),
            "successful": counts[JobState.COMPLETED],
            "failed": counts[JobState.FAILED],
            "cancelled": counts[JobState.CANCELLED],
            "skipped": counts[JobState.SKIPPED],
            "avg_duration": avg,
            **self.space_saved(),
            "last_24h": self.history(since=now - 86400, until=now, step=3600),
        }

    def space_saved(self) -> dict[str, Any]:
        """Input, output and saved bytes summed over completed jobs whose sizes are both known."""
        # Covered by the (state, input_bytes, output_bytes) index: no table rows are read.
        count, total_in, total_out = self._query(
            "SELECT COUNT(*), COALESCE(SUM(input_bytes), 0), COALESCE(SUM(output_bytes), 0) "
            "FROM jobs WHERE state = 'completed' AND input_bytes IS NOT NULL "
            "AND output_bytes IS NOT NULL", ())[0]
        saved = total_in - total_out
        return {"sized_jobs": count, "input_bytes": total_in, "output_bytes": total_out,
                "saved_bytes": saved, "saved_ratio": saved / total_in if total_in else None}

    def history(self, *, since: float, until: float, step: float) -> list[dict[str, Any]]:
        """Jobs finished per time bucket, by outcome, with their mean duration."""
        buckets: dict[int, dict[str, Any]] = {}
        count = max(1, int((until - since + step - 1e-9) // step))
        for i in range(count):
            buckets[i] = {"start": since + i * step, "completed": 0, "failed": 0,
                          "cancelled": 0, "skipped": 0, "avg_duration": None}
        rows = self._query(
            f"SELECT {self.BUCKET} AS b, state, COUNT(*), "
            "AVG(finished_at - started_at) FROM jobs WHERE finished_at >= ? AND finished_at < ? "
            "AND state IN ('completed', 'failed', 'cancelled', 'skipped') GROUP BY b, state",
            (since, step, since, until),
        )
        for bucket, state, n, avg in rows:
            if bucket in buckets:
                buckets[bucket][state] = n
                if state == "completed":
                    buckets[bucket]["avg_duration"] = avg
        return list(buckets.values())


class StoreReads:
    """The read methods of the `JobStore` interface, answered by the store's `JobQueries`.

    Both stores compose their read side (a `JobQueries` over their own connection, `_reads`)
    and expose it through these methods, written once here.
    """

    _reads: JobQueries

    def get(self, job_id: int) -> Job:
        """One job by id."""
        return self._reads.get(job_id)

    def find(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """The newest job for exactly this version of a file, if any."""
        return self._reads.find(source_path, size, mtime_ns)

    def unfinished_job(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """A job of exactly this version of a file that has not finished (queued, running, paused)."""
        return self._reads.unfinished_job(source_path, size, mtime_ns)

    def seen(self, source_path: str, size: int, mtime_ns: int) -> bool:
        """True when this version of a file has a job, or had one that completed or was skipped."""
        return self._reads.seen(source_path, size, mtime_ns)

    def next_queued(self, *, now: float, within: Sequence[str] | None = None) -> Job | None:
        """The job a free worker would take now (FIFO within priority, honouring backoff)."""
        return self._reads.next_queued(now=now, within=within)

    def next_wakeup(self) -> float | None:
        """The earliest time a backed-off queued job becomes runnable."""
        return self._reads.next_wakeup()

    def queued(self, limit: int = 1000, offset: int = 0) -> list[Job]:
        """Queued jobs in the order they will run."""
        return self._reads.queued(limit, offset)

    def list_jobs(self, *, states: list[JobState] | None = None, profile: str | None = None,
                  search: str | None = None, since: float | None = None,
                  until: float | None = None, sort: str = "created", descending: bool = True,
                  limit: int = 100, offset: int = 0) -> tuple[list[Job], int]:
        """A filtered, sorted page of jobs and the total matching count."""
        return self._reads.list_jobs(states=states, profile=profile, search=search, since=since,
                                     until=until, sort=sort, descending=descending, limit=limit,
                                     offset=offset)

    def counts_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        return self._reads.counts_by_state()

    def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was queued."""
        return self._reads.oldest_queued_at()

    def last_finished_at(self) -> dict[JobState, float | None]:
        """The latest finish time per terminal state."""
        return self._reads.last_finished_at()

    def summary(self, *, now: float) -> dict[str, Any]:
        """Totals, average duration, space saved, and the last 24 h by hour."""
        return self._reads.summary(now=now)

    def space_saved(self) -> dict[str, Any]:
        """Input, output and saved bytes over completed jobs whose sizes are both known."""
        return self._reads.space_saved()

    def history(self, *, since: float, until: float, step: float) -> list[dict[str, Any]]:
        """Jobs finished per time bucket, by outcome, with their mean duration."""
        return self._reads.history(since=since, until=until, step=step)
