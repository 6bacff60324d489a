"""What feedback events mean, in one place: which count as liking a track and which as rejecting it."""

from __future__ import annotations

EVENT_KINDS = ("play", "skip", "like", "follow", "unfollow")
TRACK_KINDS = ("play", "skip", "like")  # events about a track (``track``); the others are about a playlist
# A play counts as a positive from this long; a play stopped earlier, or a skip, is a hard negative.
PLAY_POSITIVE_MS = 30_000


def track_signal(kind: str, ms_played: int | None) -> int:
    """+1 when a track event says the user likes the track (a like, a play of ``PLAY_POSITIVE_MS`` or more), -1 when
    it says they rejected it (a skip, a shorter play), 0 when it says neither (a play with no duration)."""
    if kind == "like" or (kind == "play" and (ms_played or 0) >= PLAY_POSITIVE_MS):
        return 1
    if kind == "skip" or (kind == "play" and ms_played is not None and ms_played < PLAY_POSITIVE_MS):
        return -1
    return 0
