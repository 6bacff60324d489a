"""Writes of the evaluation: the reports of ``manage.py evaluate``, kept for the dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ranker import collections as c
from ranker.training.selectors import live_version
from recsys_site.mongo import get_db


def evaluation_record(*, report: dict[str, Any], model_version: str | None = None) -> Any:
    """Keep an evaluation report (``manage.py evaluate --json``'s content) for the dashboard.

    The harness retrains the served recipe on a split of the store as it is now, so a report belongs to the data
    and parameters of its time rather than to one version's files: it is filed under ``model_version`` (default:
    the report's own ``model_version``, else the version live when it is recorded), which the dashboard shows it
    with.
    """
    doc = json.loads(json.dumps(report, default=float))  # plain types only: numpy floats would not encode
    version = model_version or doc.get("model_version") or live_version()
    stored = {**doc, "model_version": version, "created_at": datetime.now(UTC)}
    return get_db()[c.EVALUATIONS].insert_one(stored).inserted_id
