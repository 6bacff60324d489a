"""The picks precompute in shards: batched picks equal one-at-a-time picks, and nothing is swapped in unless every
shard has written its users."""

from __future__ import annotations

import numpy as np
import pytest


def test_batched_playlist_picks_equal_one_user_at_a_time(live):
    from ranker.picks.serve import recommend_playlists, recommend_playlists_many

    sizes = live.user_items.getnnz(axis=1)
    rows = np.flatnonzero(sizes > 0)[:25]
    users = live.user_ids[rows].tolist()
    batch = recommend_playlists_many(users=users, k=10, model=live,
                                     tracks=[live.user_items[r].indices.astype(np.int64) for r in rows])
    for user, picks in zip(users, batch, strict=True):
        alone = recommend_playlists(user=user, k=10, model=live)
        assert picks.source == alone.source == "model"
        assert [p["pid"] for p in picks.playlists] == [p["pid"] for p in alone.playlists]
        assert [p["why"] for p in picks.playlists] == [p["why"] for p in alone.playlists]


def test_a_cold_user_in_a_batch_gets_most_followed_and_the_others_are_unaffected(live):
    from ranker.picks.serve import recommend_playlists_many

    warm = str(live.user_ids[int(np.flatnonzero(live.user_items.getnnz(axis=1) > 0)[0])])
    cold, other = recommend_playlists_many(users=["api:nobody-yet", warm], k=5, model=live,
                                           tracks=[np.zeros(0, dtype=np.int64),
                                                   live.user_items[live.user_index[warm]].indices.astype(np.int64)])
    assert cold.source == "most_followed" and len(cold.playlists) == 5
    assert other.source == "model" and other.playlists


def test_sharded_precompute_covers_every_user_with_the_picks_of_the_whole_run(live):
    from ranker.picks.precompute import picks_precompute
    from ranker.picks.selectors import picks_for_user, picks_state
    from ranker.picks.serve import recommend_tracks

    summary = picks_precompute(model=live, shard_users=37)  # shards that do not divide the users evenly
    assert summary["users"] == len(live.user_ids) and summary["shards"] == -(-len(live.user_ids) // 37)
    assert picks_state()["users"] == len(live.user_ids)
    for row in (0, 36, 37, len(live.user_ids) - 1):  # both sides of a shard boundary, and the last user
        user = str(live.user_ids[row])
        doc = picks_for_user(user=user)
        assert doc["model_version"] == live.version and len(doc["tracks"]) == 50
        alone = recommend_tracks(user=user, k=50, model=live)
        assert [t["uri"] for t in doc["tracks"]] == alone.tracks


def test_a_missing_shard_refuses_the_swap_and_the_old_picks_keep_serving(live):
    from ranker.picks.precompute import picks_discard, picks_plan, picks_precompute, picks_shard, picks_swap
    from ranker.picks.selectors import picks_for_user

    picks_precompute(model=live)
    user = str(live.user_ids[-1])
    before = picks_for_user(user=user)
    plan = picks_plan(model=live, shard_users=100)
    assert len(plan["shards"]) >= 2
    for shard in plan["shards"][:-1]:  # the last shard never runs
        picks_shard(plan=plan, **shard)
    picks_shard(plan=plan, **plan["shards"][0])  # a redelivered shard writes the same users again
    with pytest.raises(RuntimeError, match=f"holds {plan['shards'][-1]['start']:,} of {plan['users']:,} users"):
        picks_swap(plan=plan)
    assert picks_for_user(user=user) == before
    picks_discard(plan=plan)


def test_a_shard_outside_the_model_is_refused(live):
    from ranker.picks.precompute import picks_plan, picks_shard

    plan = picks_plan(model=live)
    with pytest.raises(ValueError, match="outside model"):
        picks_shard(plan=plan, start=0, stop=len(live.user_ids) + 1)
    with pytest.raises(ValueError, match="shard_users must be at least 1"):
        picks_plan(model=live, shard_users=-3)


def test_a_refresh_made_while_the_weekly_picks_ran_survives_the_swap(live):
    """Issue 15, finding 14: the swap of the weekly picks overwrote a user's refresh made while they were computed
    (their new like was lost until next week). The users refreshed during the precompute are refreshed again."""
    from ingestion.feedback.services import event_record_many
    from ranker.picks.precompute import picks_plan, picks_refresh_user, picks_shard, picks_swap
    from ranker.picks.selectors import picks_for_user

    user = str(live.user_ids[3])
    plan = picks_plan(model=live)
    for shard in plan["shards"]:
        picks_shard(plan=plan, **shard)  # the weekly picks are written, not yet swapped in
    liked = str(live.item_ids[int(np.flatnonzero(live.user_items[3].toarray().ravel() == 0)[0])])
    event_record_many(events=[{"user": user, "kind": "like", "track": liked}])
    refreshed = picks_refresh_user(user=user)  # what the refresh task does as the like arrives
    assert refreshed["refreshed"] and liked not in [t["uri"] for t in refreshed["tracks"]]
    summary = picks_swap(plan=plan)
    after = picks_for_user(user=user)
    assert summary["refreshes_replayed"] >= 1
    assert after["refreshed"] and after["liked_tracks"] == refreshed["liked_tracks"]
    assert liked not in [t["uri"] for t in after["tracks"]]
    other = picks_for_user(user=str(live.user_ids[4]))
    assert not other.get("refreshed") and other["computed_at"] == summary.get("computed_at", other["computed_at"])
