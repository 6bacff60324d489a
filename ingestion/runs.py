"""The skeleton every ingest run shares, MPD slices and listening triplets alike.

A run is a document in ``ingest_runs`` written before its first write and finished whatever happens (status,
summary, the first ``MAX_STORED_PROBLEMS`` problems); every input file is recorded in ``ingest_files`` by its
sha256 once it is written whole, so the same content is skipped next time. The two services supply only what
differs: how a file is parsed and how its rows are stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from recsys_site.mongo import get_db

from . import collections as c
from .mpd import Problem

MAX_STORED_PROBLEMS = 500


@dataclass
class RunReport:
    """What every ingest run reports: files read, skipped and failed, rejections, problems, time, its run id.

    A service's report adds its own counts and names them in ``COUNTS``; ``RATE`` is the name of the throughput in
    the summary and the count it divides by the seconds.
    """

    COUNTS: ClassVar[tuple[str, ...]] = ("files", "files_skipped", "files_failed", "rejected")
    RATE: ClassVar[tuple[str, str]] = ("files_per_s", "files")

    files: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    rejected: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    run_id: Any = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in self.COUNTS}
        out["seconds"] = round(self.seconds, 2)
        name, counted = self.RATE
        out[name] = round(getattr(self, counted) / self.seconds, 1) if self.seconds else 0.0
        return out

    def file_failed(self, problem: Problem) -> None:
        """A file that could not be read or used at all: named with why, and the run goes on."""
        self.files_failed += 1
        self.problems.append(problem)

    def file_skipped(self, name: str) -> None:
        """A file whose content (sha256) an earlier run already ingested whole."""
        self.files_skipped += 1
        self.skipped.append(name)


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def ingest_run(*, kind: str, paths: list[str], report: RunReport) -> Iterator[Any]:
    """A run of ``kind`` over ``paths``: its document is written now and its id is given (and set on ``report``);
    on the way out the run is finished, with ``report``'s summary and problems, as ``succeeded``,
    ``succeeded_with_errors`` (something was rejected) or ``failed`` (an exception left the block)."""
    started = time.perf_counter()
    report.run_id = get_db()[c.INGEST_RUNS].insert_one(
        {"kind": kind, "paths": [str(p) for p in paths], "status": "running", "started_at": _now()}).inserted_id
    status = "failed"
    try:
        yield report.run_id
        status = "succeeded" if report.ok else "succeeded_with_errors"
    finally:
        report.seconds = time.perf_counter() - started
        get_db()[c.INGEST_RUNS].update_one({"_id": report.run_id}, {"$set": {
            "status": status, "finished_at": _now(), "summary": report.summary(), "problem_count": len(report.problems),
            "problems": [p.to_doc() for p in report.problems[:MAX_STORED_PROBLEMS]]}})


def ingest_file_done(sha: str) -> dict[str, Any] | None:
    """The record of a file with this content that an earlier run ingested whole, or None."""
    return get_db()[c.INGEST_FILES].find_one({"_id": sha, "status": "done"})


def ingest_file_record(*, sha: str, name: str, kind: str, run_id: Any, counts: dict[str, int],
                       **extra: Any) -> None:
    """Record a file as ingested whole (after its last write): the next run with the same content skips it."""
    get_db()[c.INGEST_FILES].replace_one(
        {"_id": sha},
        {"_id": sha, "sha256": sha, "name": name, "kind": kind, "status": "done", "run_id": run_id,
         "counts": counts, "ingested_at": _now(), **extra},
        upsert=True,
    )
