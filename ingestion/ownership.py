"""Who owns a playlist: the one rule, in one place.

The MPD publishes no owners. By default every MPD playlist gets its own pseudo-user ``mpd:<pid>``,
whose liked tracks are that playlist's tracks. Users created through the API or from triplet files
own their playlists explicitly. To adopt another rule (say, group MPD playlists by a hashed owner
column of a richer dump), change this function and re-ingest.
"""

from __future__ import annotations

MPD_USER_PREFIX = "mpd:"


def owner_of_mpd_playlist(pid: int) -> str:
    """The user id that owns MPD playlist ``pid``."""
    return f"{MPD_USER_PREFIX}{pid}"
