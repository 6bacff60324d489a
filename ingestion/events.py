"""What feedback events mean, in one place: which count as liking a track and which as rejecting it."""

EVENT_KINDS = ("play", "skip", "like", "follow", "unfollow")
# A play counts as a positive from this long; a play stopped earlier, or a skip, is a hard negative.
PLAY_POSITIVE_MS = 30_000
