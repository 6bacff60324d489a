"""The jobs Buddies runs, each a list of steps that call one service apiece (``recsys_site.jobs``).

Imported when the app is ready (``RecsysSiteConfig.ready``), which registers the jobs with the engine.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from ingestion.feedback.services import event_delete_before
from ingestion.selectors import user_ids_of_source
from ingestion.services import catalogue_stats_compute
from pairing.selectors import buddies_state
from pairing.services import buddies_compute
from ranker.evaluation.services import version_evaluate
from ranker.experiments.assign import pinned_versions
from ranker.experiments.served_log import served_delete_before
from ranker.picks.precompute import (
    picks_discard,
    picks_plan,
    picks_refresh_user,
    picks_shard,
    picks_swap,
    playlist_picks_done,
    playlist_picks_plan,
    playlist_picks_shard,
)
from ranker.picks.selectors import picks_state
from ranker.playlist_ranking.services import playlist_ranker_train
from ranker.recommenders.playlist_ranker import DEFAULT_PARAMS as PLAYLIST_RANKER_PARAMS
from ranker.training.selectors import live_model, live_model_clear, live_version, model_get
from ranker.training.served import served_params
from ranker.training.services import PromotionRefused, model_files_cleanup, model_promote, ranker_train

from .collections import JOB_RUNS
from .jobs import Context, Job, Step, StopJob, register
from .mongo import get_db


def _train(ctx: Context) -> dict[str, Any]:
    params = ctx.params.get("ranker") or {}
    epochs = served_params(params)["bpr"]["epochs"]
    ctx.log(f"training the ranker ({epochs} BPR epochs at most)")
    model = ranker_train(params=params, callback=ctx.epoch_callback(epochs, "training (ALS, then BPR)"),
                         say=lambda message: ctx.progress(1.0, message, force=True))
    ctx.remember(model_version=model.version)
    _set_run_fields(ctx, model_version=model.version, device=model.meta.get("device"))
    metrics = {k: v for k, v in model.meta["metrics"].items() if k != "components"}
    ctx.log(f"trained {model.version}: {metrics}")
    return {"model_version": model.version, **metrics}


def _evaluate(ctx: Context) -> dict[str, Any]:
    """The new version's recipe and the live one's, retrained on one sampled RecSys 2018 split and compared like
    for like (ADR 0019): the report goes to the Models page and the verdict to the registry, where the promotion
    reads it. ``EVAL_SAMPLE_PLAYLISTS=0`` skips it (promotion then goes by the validation hit rate alone)."""
    version = ctx.state["model_version"]
    sample = settings.EVAL_SAMPLE_PLAYLISTS
    if sample <= 0:
        ctx.log(f"{version} not evaluated (EVAL_SAMPLE_PLAYLISTS={sample})")
        return {"evaluated": False, "reason": f"EVAL_SAMPLE_PLAYLISTS={sample}"}
    live = live_version()
    ctx.log(f"evaluating {version} against {live or 'no live version'}: {sample:,} sampled playlists, "
            f"{settings.EVAL_TEST_SIZE} test playlists, seed {settings.EVAL_SEED}")
    summary = version_evaluate(version=version, live_version=live, sample=sample, test_size=settings.EVAL_TEST_SIZE,
                               seed=settings.EVAL_SEED, progress=ctx.progress)
    if not summary["evaluated"]:
        ctx.log(f"{version} not evaluated: {summary['reason']}")
        return summary
    shown = ", ".join(f"{m} {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                      for m, d in summary["comparison"].items())
    ctx.log(f"evaluated {version} on {summary['cases']} test playlists: {summary['overall']}"
            + (f"; against {summary['against']}: {shown}" if shown else ""))
    return summary


def _promote(ctx: Context) -> dict[str, Any]:
    """``train_ranker``'s last step: a refused candidate ends the run there (successfully, saying so)."""
    try:
        return _promote_candidate(ctx)
    except PromotionRefused as exc:
        version = ctx.state["model_version"]
        raise StopJob(f"candidate {version} not promoted; the live model keeps serving: {exc}") from exc


def _promote_or_keep(ctx: Context) -> dict[str, Any]:
    """The weekly refresh's promotion: a refused candidate does not end the run. The live model keeps serving and
    the buddies and picks are recomputed with it, so users and playlists that arrived since it was trained still
    get theirs (the picks step folds in the users it does not know)."""
    try:
        return _promote_candidate(ctx)
    except PromotionRefused as exc:
        version, live = ctx.state["model_version"], live_version()
        ctx.remember(refused=version)
        ctx.log(f"candidate {version} refused; the live model {live} keeps serving, and the buddies and picks are "
                f"recomputed with it: {exc}")
        return {"live": live, "refused": version, "reason": str(exc)}


def _promote_candidate(ctx: Context) -> dict[str, Any]:
    version = ctx.state["model_version"]
    if not ctx.params.get("promote", True):
        ctx.log(f"{version} registered as a candidate (promote=false)")
        return {"live": None, "candidate": version}
    try:
        promotion = model_promote(version=version, force=bool(ctx.params.get("force")))
    except PromotionRefused as exc:
        ctx.log(str(exc))
        raise
    live_model_clear()
    ctx.log(f"{version} is live (was {promotion.previous})")
    return {"live": version, "previous": promotion.previous}


def _buddies(ctx: Context) -> dict[str, Any]:
    live_model_clear()
    summary = buddies_compute(callback=lambda step, elapsed, m: ctx.progress(step / 2, f"buddies: {m}"))
    ctx.log(f"buddies: {summary}")
    return summary


def _picks_plan(ctx: Context) -> list[dict[str, Any]]:
    plan = picks_plan(shard_users=ctx.params.get("shard_users"))
    ctx.remember(picks_plan={k: v for k, v in plan.items() if k != "shards"})
    ctx.log(f"picks: {plan['users']:,} users of {plan['version']} in {len(plan['shards'])} shards")
    return plan["shards"]


def _picks_shard(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    return picks_shard(plan=ctx.state["picks_plan"], **spec)


def _picks_swap(ctx: Context, shard_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    plan = {**ctx.state["picks_plan"], "shards": shard_metrics}
    summary = picks_swap(plan=plan, shard_metrics=shard_metrics)
    summary["shard_seconds"] = round(sum(m.get("seconds", 0.0) for m in shard_metrics), 3)
    summary["unknown_users_folded_in"] = _picks_unknown_users(ctx)
    ctx.log(f"picks: {summary}")
    return summary


def _picks_unknown_users(ctx: Context) -> int:
    """Users created through the API that the serving model has never seen (they arrived after its training, e.g.
    when this week's candidate was refused) get their picks folded in from what they like now, as a per-user
    refresh does: the swap has just replaced the picks collection with the model's own users. Bounded by the API
    users the model does not know."""
    model = live_model()
    if model is None:
        return 0
    known = model.user_index
    unknown = [u for u in user_ids_of_source(source="api") if u not in known]
    for n, user in enumerate(unknown, start=1):
        picks_refresh_user(user=user)
        ctx.progress(1.0, f"picks: {n:,} of {len(unknown):,} users the model does not know folded in")
    if unknown:
        ctx.log(f"picks: {len(unknown):,} API users unknown to {model.version} folded in")
    return len(unknown)


def _picks_abort(ctx: Context) -> None:
    plan = ctx.state.get("picks_plan")
    if plan:
        picks_discard(plan=plan)


def _metrics(ctx: Context) -> dict[str, Any]:
    live = live_version()
    model = model_get(version=live) if live else None
    # The dashboard's catalogue statistics are refreshed here too (users, listens and events change between ingests);
    # their counts are what this step records, so the store is counted once.
    stats = catalogue_stats_compute()
    ctx.log(f"catalogue statistics recomputed in {stats['seconds']} s")
    summary = {"live_model": live, "catalogue": stats["counts"],
               "model_metrics": {k: v for k, v in ((model or {}).get("metrics") or {}).items() if k != "components"},
               "buddies_users": (buddies_state() or {}).get("written"),
               "picks_users": (picks_state() or {}).get("users")}
    ctx.log(f"recorded: live {live}, {summary['picks_users']} users with picks")
    return summary


def _cleanup(ctx: Context) -> dict[str, Any]:
    """Model versions nobody needs any more, out of the store and this machine's cache (ADR 0004, ADR 0010); then
    served lists and feedback events past their retention."""
    pinned = pinned_versions()
    removed = model_files_cleanup(keep=pinned, min_age=timedelta(hours=settings.MODEL_CLEANUP_MIN_AGE_HOURS))
    ctx.log(f"cleanup: removed {len(removed)} ({', '.join(removed) or 'nothing'}); kept the pinned {sorted(pinned)}")
    return {"removed": removed, "pinned": sorted(pinned), **_retention(ctx)}


def _retention(ctx: Context) -> dict[str, int]:
    """Served lists older than ``SERVED_RETENTION_DAYS`` and events older than ``EVENTS_RETENTION_DAYS`` go, through
    their owners' services, ``RETENTION_BATCH`` documents per delete (the TTL indexes do the same where the store
    runs them; this step makes it happen on any store, and at once)."""
    now = datetime.now(UTC)
    out = {}
    for label, days, delete in (("served_deleted", settings.SERVED_RETENTION_DAYS, served_delete_before),
                                ("events_deleted", settings.EVENTS_RETENTION_DAYS, event_delete_before)):
        total = 0
        if days > 0:
            before = now - timedelta(days=days)
            while (n := delete(before=before, batch=settings.RETENTION_BATCH)) > 0:
                total += n
                ctx.progress(0.5, f"cleanup: {total:,} {label.split('_')[0]} older than {days:g} days deleted")
                if n < settings.RETENTION_BATCH:
                    break
        out[label] = total
    ctx.log(f"cleanup: retention deleted {out['served_deleted']:,} served lists and {out['events_deleted']:,} events")
    return out


def _train_playlist_ranker(ctx: Context) -> dict[str, Any]:
    """The learned playlist ranker from the feedback so far, made live (ADR 0014). Not enough feedback ends the
    step successfully with the reason as its result, and nothing written."""
    params = ctx.params.get("ranker") or {}
    epochs = int({**PLAYLIST_RANKER_PARAMS, **params}["epochs"])
    ctx.log(f"training the playlist ranker ({epochs} BPR epochs)")
    summary = playlist_ranker_train(params=params, promote=bool(ctx.params.get("promote", True)),
                                    callback=ctx.epoch_callback(epochs, "playlist BPR"))
    if not summary["trained"]:
        ctx.log(f"no playlist ranker trained: {summary['reason']}")
        return summary
    _set_run_fields(ctx, playlist_ranker_version=summary["version"], device=summary["device"])
    ctx.remember(playlist_ranker_live=bool(summary["live"]))
    ctx.log(f"playlist ranker {summary['version']} (live: {summary['live']}): weights {summary['weights']}, "
            f"held out {summary['evaluation']}")
    return summary


def _playlist_picks_plan(ctx: Context) -> list[dict[str, Any]]:
    """After a new playlist ranker went live: the stored playlist picks it would rank otherwise are re-ranked with
    it, so that users get them precomputed rather than computed on their first request of the day."""
    trained = ctx.state.get("playlist_ranker_live")
    plan = playlist_picks_plan(shard_users=ctx.params.get("shard_users")) if trained else None
    if plan is None:
        ctx.remember(playlist_picks_plan=None)
        reason = ("no stored picks, or the default ranking does not use the learned ranker" if trained else
                  "no new playlist ranker went live")
        ctx.log(f"playlist picks: nothing to re-rank ({reason})")
        return []
    ctx.remember(playlist_picks_plan={k: v for k, v in plan.items() if k != "shards"})
    ctx.log(f"playlist picks: {plan['users']:,} users of {plan['version']} re-ranked by {plan['ranker']} in "
            f"{len(plan['shards'])} shards")
    return plan["shards"]


def _playlist_picks_shard(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    return playlist_picks_shard(plan=ctx.state["playlist_picks_plan"], **spec)


def _playlist_picks_done(ctx: Context, shard_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    plan = ctx.state.get("playlist_picks_plan")
    if not plan:
        return {"reranked": 0}
    summary = playlist_picks_done(plan=plan, shard_metrics=shard_metrics)
    ctx.log(f"playlist picks: {summary}")
    return summary


def _set_run_fields(ctx: Context, **fields: Any) -> None:
    get_db()[JOB_RUNS].update_one({"_id": ctx.run_id}, {"$set": fields})


TRAIN = Step("train", _train, queue="gpu", weight=6)
# Two trainings of the served recipe on a sample of the store (the candidate's and the live one's parameters).
EVALUATE = Step("evaluate", _evaluate, queue="gpu", weight=2)
PROMOTE = Step("promote", _promote, weight=0.2)
# The weekly refresh goes on when its candidate is refused: the live model's buddies and picks are recomputed.
PROMOTE_OR_KEEP = Step("promote", _promote_or_keep, weight=0.2)
BUDDIES = Step("buddies", _buddies, queue="gpu", weight=1)
# Sharded: every worker on the default queue takes a share; the new picks are swapped in after the last shard.
PICKS = Step("picks", _picks_plan, weight=3, shard=_picks_shard, gather=_picks_swap, abort=_picks_abort)
METRICS = Step("metrics", _metrics, weight=0.1)
CLEANUP = Step("cleanup", _cleanup, weight=0.1)
TRAIN_PLAYLIST_RANKER = Step("train_playlist_ranker", _train_playlist_ranker, queue="gpu", weight=1)
# Sharded like the picks, but in place: each stored document's playlist half is re-ranked by the new ranker.
PLAYLIST_PICKS = Step("playlist_picks", _playlist_picks_plan, weight=1, shard=_playlist_picks_shard,
                      gather=_playlist_picks_done)

register(Job("weekly_refresh", "Train the ranker, evaluate it against the live one on the same split, promote it if "
             "not worse, recompute buddies and every user's picks, then remove the model versions nobody needs (a "
             "refused candidate leaves the live model serving: the buddies and picks are recomputed with it).",
             (TRAIN, EVALUATE, PROMOTE_OR_KEEP, BUDDIES, PICKS, METRICS, CLEANUP),
             params={"ranker": {}, "force": False, "shard_users": None}))
register(Job("train_ranker", "Train the ranker, evaluate it against the live one on the same split, and promote it "
             "if not worse (unless promote is false).",
             (TRAIN, EVALUATE, PROMOTE), params={"ranker": {}, "force": False, "promote": True}))
register(Job("compute_buddies", "Recompute every user's buddies from the live model.", (BUDDIES,)))
register(Job("precompute_picks", "Recompute every user's track and playlist picks from the live model.", (PICKS,),
             params={"shard_users": None}))
register(Job("train_playlist_ranker", "Train the learned playlist ranker (playlist BPR, feature weights, exploration "
             "posteriors) from the feedback so far and make it live, then re-rank the stored playlist picks with it; "
             "ends saying so when there is not enough feedback.",
             (TRAIN_PLAYLIST_RANKER, PLAYLIST_PICKS), params={"ranker": {}, "promote": True, "shard_users": None}))
