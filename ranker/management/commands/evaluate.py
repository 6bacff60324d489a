"""``manage.py evaluate``: the RecSys 2018 harness on the playlists in the store (README: "Quality on the real
sample")."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ranker.evaluation.compare import paired_bootstrap
from ranker.evaluation.harness import (
    CATEGORY_NAMES,
    evaluate_method,
    evaluate_playlists,
    evaluate_served,
    format_playlist_table,
    format_table,
    score_model,
    split,
)
from ranker.evaluation.services import evaluation_record
from ranker.playlist_ranking.selectors import playlist_ranker_live
from ranker.training.data import Playlists
from ranker.training.served import SERVED_NAME, served_params

RERANKED = "reranked"
COMPARED = ("r_precision", "ndcg", "clicks")


class Command(BaseCommand):
    help = ("Split the stored playlists into RecSys 2018 seed categories, train every method on the training part "
            "only, and report R-precision, NDCG and clicks per category, plus playlist-pick metrics.")

    def add_arguments(self, parser):
        parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
        parser.add_argument("--categories", help=f"comma-separated subset of: {', '.join(CATEGORY_NAMES)}")
        parser.add_argument("--test-size", type=int, default=1000, help="test playlists in all (default 1000)")
        parser.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
        parser.add_argument("--epochs", type=int, help="BPR epochs (default: the served setting)")
        parser.add_argument("--threads", type=int, help="torch threads for BPR")
        parser.add_argument("--second-stage-cases", type=int,
                            help="training playlists cut for the second stage (default: the served setting; 0: none)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        for noisy in ("ranker", "pairing", "faiss"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        show = not opts["no_progress"]
        categories = [c.strip() for c in opts["categories"].split(",")] if opts["categories"] else None
        started = time.perf_counter()
        playlists = Playlists.from_store()
        if len(playlists) == 0:
            raise CommandError("the store holds no playlists: run manage.py ingest_mpd PATH first")
        try:
            the_split = split(playlists, test_size=opts["test_size"], categories=categories,
                              random_state=opts["seed"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not the_split.cases:
            raise CommandError(f"no playlist is long enough for the chosen categories ({len(playlists)} playlists)")
        self.stdout.write(f"{len(playlists):,} playlists, {playlists.n_items:,} tracks; "
                          f"{len(the_split.cases):,} test playlists, training on {the_split.train.nnz:,} rows")
        params = served_params({"bpr": {"epochs": opts["epochs"]}} if opts["epochs"] else None)
        if opts["second_stage_cases"] is not None:
            params["second_stage_cases"] = opts["second_stage_cases"]
        results = {}
        results["popularity"], _ = evaluate_method(None, the_split, show_progress=show)
        # The served recipe: the blend, re-ranked by the second stage when it has one (learned from cases cut from
        # the training part only). The blend and its fitted parts are scored alone too (the kNN is the baseline).
        served = evaluate_served(params, the_split, random_state=opts["seed"], threads=opts["threads"],
                                 show_progress=show)
        served_name, comparison, reranked = SERVED_NAME, {}, None
        if served.first_stage is not None:
            results[SERVED_NAME], results[RERANKED], reranked = served.first_stage, served, served.model
            served_name = RERANKED
            comparison = {m: paired_bootstrap(results[SERVED_NAME].values(m), results[RERANKED].values(m),
                                              metric=m).to_json() for m in COMPARED}
        else:
            results[SERVED_NAME] = served
        fitted = results[SERVED_NAME].model
        for part, _weight in fitted.components:
            results[part.name] = score_model(part, the_split)
            results[part.name].train_seconds = float(getattr(part, "metrics_", {}).get("seconds", 0.0))
        bpr = next(p for p, _ in fitted.components if p.name == "bpr")
        learned = playlist_ranker_live()  # the live learned playlist ranker, when one is trained: a row of its own
        playlists_result = evaluate_playlists(the_split, bpr, learned=learned, show_progress=show)
        order = ["popularity", "itemknn", "als", "bpr", SERVED_NAME, RERANKED]
        results = {name: results[name] for name in order if name in results}
        self.stdout.write("\nTrack picks (500 per playlist), overall:\n")
        self.stdout.write(format_table(results, served=served_name))
        if comparison:
            self.stdout.write(f"\n{RERANKED} against {SERVED_NAME}, paired bootstrap over the same test playlists:\n")
            self.stdout.write(format_comparison(comparison))
        self.stdout.write("\nPlaylist picks (10 per user, test playlists with seeds):\n")
        served_playlists = "learned" if learned is not None and settings.PLAYLIST_RANKER_DEFAULT == "learned" \
            else "buddies"
        self.stdout.write(format_playlist_table(playlists_result, served=served_playlists))
        if learned is not None and "vs_hand" in playlists_result.get("learned", {}):
            self.stdout.write(f"\nlearned (playlist ranker {learned.version}) against buddies (the hand-set ranking), "
                              "paired bootstrap over the same test playlists:\n")
            self.stdout.write(format_comparison(playlists_result["learned"]["vs_hand"]))
        if comparison:
            self.stdout.write(f"\n{RERANKED} = LightGBM LambdaRank over {SERVED_NAME}'s candidates "
                              f"({reranked.stage.metrics_['cases']} training cases, "
                              f"{reranked.stage.metrics_['rounds']} rounds)")
        self.stdout.write(f"\n{SERVED_NAME} = {fitted.describe()}; done in {time.perf_counter() - started:.0f} s")
        report = {
            "served": served_name,
            "second_stage_comparison": {"baseline": SERVED_NAME, "method": served_name, "metrics": comparison}
            if comparison
            else None,
            "methods": {name: r.to_json() for name, r in results.items()},
            "playlists": playlists_result,
            "served_playlists": served_playlists,
            "learned_playlist_ranker": learned.version if learned is not None else None,
            "split": {"test_size": len(the_split.cases), "seed": opts["seed"], "playlists": len(playlists),
                      "categories": sorted({c.category for c in the_split.cases})},
            "bpr": bpr.metrics_,
        }

        evaluation_record(report=report)
        if opts["json"]:
            Path(opts["json"]).write_text(json.dumps(report, indent=2, default=float))
            self.stdout.write(f"wrote {opts['json']}")



def format_comparison(comparison: dict[str, dict]) -> str:
    lines = ["| metric | baseline | method | difference [95 % interval] | relative |", "|---|---|---|---|---|"]
    for metric, d in comparison.items():
        lines.append(f"| {metric} | {d['a']:.4f} | {d['b']:.4f} | {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                     f" | {d['relative']:+.1%} |")
    return "\n".join(lines)
