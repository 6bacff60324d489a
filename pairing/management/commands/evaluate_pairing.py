import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pairing.hetrec import evaluate_hetrec
from pairing.services import hetrec_result_record


class Command(BaseCommand):
    help = (
        "Buddies against real friendships: pair the HetRec 2011 Last.fm users by their listening (BPR taste "
        "vectors, exact cosine top-K) and measure friend recall@K = mean over users with >= 1 friend of "
        "|friends & buddies_K| / min(|friends|, K), against K random users and the K most active users."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hetrec", required=True, metavar="DIR",
                            help="the HetRec Last.fm folder (user_artists.dat, user_friends.dat)")
        parser.add_argument("--k", type=int, default=10, help="buddies per user (default 10)")
        parser.add_argument("--json", dest="json_out", metavar="OUT", help="also write the results to this file")
        parser.add_argument("--seed", type=int, default=0, help="seed of BPR and of the random baseline")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        parser.add_argument("--no-record", action="store_true",
                            help="do not keep the result in MongoDB (by default the dashboard shows the latest)")

    def handle(self, *args, hetrec, k, json_out, seed, no_progress, no_record, verbosity, **options):
        folder = Path(hetrec)
        if not folder.is_dir():
            raise CommandError(f"--hetrec {hetrec}: no such folder")
        for name in ("user_artists.dat", "user_friends.dat"):
            if not (folder / name).is_file():
                raise CommandError(f"--hetrec {hetrec}: missing {folder / name}")
        if k < 1:
            raise CommandError(f"--k must be positive, got {k}")
        try:
            result = evaluate_hetrec(folder, k=k, random_state=seed, show_progress=not no_progress and verbosity > 0)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

        self.stdout.write(f"{result['users']:,} users, {result['artists']:,} artists, {result['listens']:,} listens, "
                          f"{result['friendships']:,} friendships; {result['users_with_friends']:,} users with "
                          f"friends evaluated")
        self.stdout.write(f"friend recall@{k} = mean |friends & buddies| / min(|friends|, {k})  "
                          f"(and / |friends|)")
        rows = [("BPR taste buddies", "friend_recall", "friend_recall_over_friends"),
                ("random (measured)", "random", "random_over_friends"),
                ("random (expected)", "exact_random_expectation", "exact_random_expectation_over_friends"),
                ("most active", "most_active", "most_active_over_friends")]
        if "raw_cosine" in result:
            rows.append(("raw cosine (no model)", "raw_cosine", "raw_cosine_over_friends"))
        self.stdout.write(f"{'method':<24}{'recall@' + str(k):>12}{'/|friends|':>12}{'lift':>8}")
        for label, key, key_f in rows:
            lift = result[key] / result["random"] if result["random"] else float("nan")
            self.stdout.write(f"{label:<24}{result[key]:>12.4f}{result[key_f]:>12.4f}{lift:>7.1f}x")
        self.stdout.write(f"lift over random: {result['lift_over_random']}x "
                          f"({result['lift_over_exact_random']}x over the exact expectation); "
                          f"BPR {result['bpr']['trained']['epochs']} epochs; {result['seconds']['total']:.1f} s")
        if not no_record:
            record = hetrec_result_record(result=result, dataset=str(folder.resolve()))
            self.stdout.write(f"recorded as pairing evaluation {record}")
        if json_out:
            out = Path(json_out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
            self.stdout.write(f"wrote {out}")
