"""Feedback events (plays, skips, likes, follows): what they mean (``rules``), how they are stored (``services``)
and read (``selectors``). The ``events`` collection is written and read here only."""
