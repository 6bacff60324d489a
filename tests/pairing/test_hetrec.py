"""Buddies against real friendships: friend recall, its baselines and ``evaluate_pairing`` on HetRec-format data."""

from __future__ import annotations

import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from pairing.hetrec import (
    friend_recall,
    load_hetrec,
    most_active_neighbours,
    random_expectation,
    random_neighbours,
)

# Two obvious taste groups: users 1-4 listen to artists 10-15 (each to five of them), users 5-8 to artists 20-25.
# Friends are declared (both ways, as in HetRec) only within a group: everyone is friends with their group.
GROUPS = {1: range(10, 16), 2: range(20, 26)}
MEMBERS = {1: [1, 2, 3, 4], 2: [5, 6, 7, 8]}
FRIENDS = [(a, b) for members in MEMBERS.values() for a in members for b in members if a != b]


def write_hetrec(folder, *, listens=None, friends=None):
    """A HetRec-format folder: header lines and CRLF line ends, like the real files."""
    if listens is None:
        listens = [(user, a, 100 * n + a)
                   for g, artists in GROUPS.items() for n, user in enumerate(MEMBERS[g])
                   for i, a in enumerate(artists) if i != n]
    if friends is None:
        friends = FRIENDS
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["userID\tartistID\tweight"] + ["\t".join(map(str, r)) for r in listens]
    (folder / "user_artists.dat").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    rows = ["userID\tfriendID"] + ["\t".join(map(str, r)) for r in friends]
    (folder / "user_friends.dat").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return folder


def test_friend_recall_hand_computed():
    ids = np.array([
        [1, 2, 3],   # friends {1, 3}: top 2 = {1, 2} -> 1 hit / min(2, 2) = 0.5; / |F| = 0.5
        [0, -1, -1],  # friends {0}: 1 hit / min(1, 2) = 1.0; / |F| = 1.0
        [3, 1, 0],   # friends {0, 1, 3}: top 2 = {3, 1} -> 2 hits / min(3, 2) = 1.0; / |F| = 2/3
        [2, 1, 0],   # no friends: not counted
    ])
    friends = {0: {1, 3}, 1: {0}, 2: {0, 1, 3}, 3: set()}
    assert friend_recall(ids, friends, 2) == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert friend_recall(ids, friends, 2, denominator="friends") == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    # k = 3 reads the third column too: user 0 gets 3 (2 hits / 2), user 2 gets all three friends (3 / 3).
    assert friend_recall(ids, friends, 3) == pytest.approx(1.0)
    assert np.isnan(friend_recall(ids, {3: set()}, 2))
    with pytest.raises(ValueError):
        friend_recall(ids, friends, 2, denominator="nope")


def test_random_baseline_expectation_is_exact_and_matches_draws():
    n, k = 12, 3
    friends = {0: {1}, 1: {0, 2, 3, 4, 5}, 2: {1, 3}}
    # E[hits] = k|F|/(n-1); divided by min(|F|, k): 3/11, 15/11/3, 6/11/2.
    expected = (3 / 11 + 5 / 11 + 3 / 11) / 3
    assert random_expectation(friends, n, k) == pytest.approx(expected)
    assert random_expectation(friends, n, k, denominator="friends") == pytest.approx(3 / 11)
    rng = np.random.default_rng(0)
    draws = [random_neighbours(n, k, rng) for _ in range(3000)]
    for ids in draws[:50]:
        assert all(u not in row and len(set(row)) == k for u, row in enumerate(ids.tolist()))
    measured = np.mean([friend_recall(ids, friends, k) for ids in draws])
    assert measured == pytest.approx(expected, abs=0.01)
    # Fewer others than k: everyone else, then -1.
    assert sorted(random_neighbours(3, 5, rng)[1].tolist()) == [-1, -1, -1, 0, 2]
    assert random_expectation({0: {1}}, 3, 5) == pytest.approx(1.0)


def test_most_active_excludes_the_user_and_is_shared():
    ids = most_active_neighbours(np.array([5, 50, 20, 50, 1]), 2)
    assert ids.tolist() == [[1, 3], [3, 2], [1, 3], [1, 2], [1, 3]]


def test_load_hetrec(tmp_path):
    folder = write_hetrec(tmp_path / "h", friends=[(1, 2), (2, 1), (1, 99), (99, 5)])
    users, artists, matrix, friends = load_hetrec(folder)
    assert len(users) == 8 and users[0] == "lastfm:1" and len(artists) == 12
    assert matrix.shape == (8, 12) and matrix.nnz == 8 * 5
    row, col = list(users).index("lastfm:6"), list(artists).index("lastfm:artist:22")
    assert matrix[row, col] == 122 and matrix[row, list(artists).index("lastfm:artist:21")] == 0
    assert friends == {0: {1}, 1: {0}}  # friendships with user 99, who has no listens, are dropped


def test_load_hetrec_rejects_bad_lines(tmp_path):
    folder = write_hetrec(tmp_path / "h", friends=[(1, 2), (3, 3)])
    with pytest.raises(ValueError, match=r"user_friends.dat: line 3: friendID: same as userID"):
        load_hetrec(folder)


def test_command_on_two_taste_groups(tmp_path, store):
    from pairing.selectors import hetrec_result_latest

    folder = write_hetrec(tmp_path / "hetrec")
    out, json_path = StringIO(), tmp_path / "out" / "result.json"
    call_command("evaluate_pairing", "--hetrec", str(folder), "--k", "3", "--json", str(json_path), "--seed", "3",
                 "--no-progress", stdout=out)
    result = json.loads(json_path.read_text())
    assert {"k", "friend_recall", "random", "most_active", "lift_over_random"} <= result.keys()
    assert result["k"] == 3 and result["users"] == 8 and result["users_with_friends"] == 8
    # Random: 3 of the 7 others, 3 of whom are friends: 3·3/7 hits expected, out of min(3, 3).
    assert result["exact_random_expectation"] == pytest.approx(3 / 7, abs=1e-6)
    # Each user's 3 buddies are the rest of their group, who are exactly their friends.
    assert result["friend_recall"] == 1.0 and result["raw_cosine"] == 1.0
    assert result["friend_recall"] > result["random"] and result["friend_recall"] > result["most_active"]
    assert result["lift_over_random"] == pytest.approx(1.0 / result["random"], rel=1e-3)
    text = out.getvalue()
    assert "BPR taste buddies" in text and "most active" in text and "random (measured)" in text
    assert "min(|friends|, 3)" in text
    # Recorded for the dashboard, as written to --json.
    latest = hetrec_result_latest()
    assert latest["result"] == result and latest["dataset"] == str(folder.resolve())
    assert f"recorded as pairing evaluation {latest['_id']}" in text


def test_command_no_record_keeps_nothing(tmp_path, store):
    from pairing.selectors import hetrec_result_latest

    out = StringIO()
    call_command("evaluate_pairing", "--hetrec", str(write_hetrec(tmp_path / "h")), "--k", "2", "--no-progress",
                 "--no-record", stdout=out)
    assert hetrec_result_latest() is None and "recorded" not in out.getvalue()


def test_command_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CommandError, match="nowhere"):
        call_command("evaluate_pairing", "--hetrec", str(missing), "--no-progress")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "user_artists.dat").write_text("userID\tartistID\tweight\n")
    with pytest.raises(CommandError, match="user_friends.dat"):
        call_command("evaluate_pairing", "--hetrec", str(tmp_path / "half"), "--no-progress")


@pytest.mark.real_data
@pytest.mark.slow
def test_real_hetrec_buddies_beat_random_threefold(hetrec):
    from pairing.hetrec import evaluate_hetrec

    result = evaluate_hetrec(hetrec, k=10, random_state=0, raw_cosine=False)
    assert result["users"] == 1892 and result["listens"] == 92834 and result["friendships"] == 25434
    assert result["lift_over_random"] >= 3, result
    assert result["lift_over_exact_random"] >= 3, result
    assert result["friend_recall"] > result["most_active"]
