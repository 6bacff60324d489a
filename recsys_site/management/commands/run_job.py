"""``manage.py run_job NAME [--sync] [--param KEY=VALUE ...]``: start a job now, on the worker or in-process."""

from __future__ import annotations

import json
import threading
import uuid

from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError

from recsys_site.jobs import JobRefused, get_job, job_start, run_get


class Command(BaseCommand):
    help = ("Start a job (weekly_refresh, train_ranker, compute_buddies, precompute_picks). Without --sync it is "
            "queued for the Celery worker and this command follows its progress until it ends (--no-wait to return).")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--sync", action="store_true", help="run the steps in this process, same run document")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="a job parameter, e.g. ranker.bpr.epochs=20 or force=true")
        parser.add_argument("--no-wait", action="store_true", help="queue it and return the run id")

    def handle(self, *args, **opts):
        run_id = uuid.uuid4().hex
        done = threading.Event()
        if opts["sync"]:  # the steps run in this thread; another shows their progress as a worker's would be shown
            threading.Thread(target=self._follow, args=(run_id, done, self.stderr), daemon=True).start()
        try:
            get_job(opts["name"])
            params = _nest(parse_params(opts["param"]))
            run = job_start(name=opts["name"], params=params, sync=opts["sync"], trigger="command", run_id=run_id)
        except JobRefused as exc:
            raise CommandError(f"{exc}; follow it with GET /api/v1/jobs/runs/{exc.run_id}") from exc
        except (KeyError, ValueError) as exc:
            raise CommandError(str(exc).strip("'\"")) from exc
        except OperationalError as exc:
            raise CommandError(f"the Celery broker is unreachable ({exc}); is the worker stack up (make run)? "
                               "--sync runs the job in this process instead") from exc
        finally:
            done.set()
        if not opts["sync"] and not opts["no_wait"]:
            run = self._follow(run["_id"], threading.Event(), self.stdout)
        elif opts["no_wait"]:
            self.stdout.write(f"queued run {run['_id']}")
            return
        self._report(run)
        if run["status"] != "succeeded":
            raise CommandError(f"run {run['_id']} {run['status']}: {run.get('error', '')}")

    def _follow(self, run_id, done, out):
        """Print the run's progress whenever it changes, until it ends (or ``done`` is set); the last document."""
        shown = None
        while True:
            run = run_get(run_id=run_id)
            if run is not None:
                line = f"{run['status']:>9} {run.get('progress', 0):5.1f}% {run.get('message', '')}"
                if line != shown:
                    out.write(line)
                    shown = line
                if run["status"] in ("succeeded", "failed", "cancelled"):
                    return run
            if done.wait(0.5 if run is None else 1.0):
                return run

    def _report(self, run):
        self.stdout.write(f"run {run['_id']} {run['status']} in {run.get('duration_s', 0):.1f} s"
                          + (f"; model {run['model_version']}" if run.get("model_version") else ""))
        for step in run["steps"]:
            self.stdout.write(f"  {step['name']:<8} {step['status']:<9} {step.get('duration_s', 0):7.1f} s  "
                              + json.dumps(step.get("metrics", {}), default=str)[:300])


def parse_params(pairs: list[str]) -> dict:
    """``bpr.epochs=20 force=true`` → ``{"bpr": {"epochs": 20}, "force": True}`` (values read as JSON)."""
    params: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--param wants KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, _, tail = key.partition(".")
        if tail:
            params.setdefault(head, {})[tail] = value
        else:
            params[key] = value
    return params


def _nest(params: dict) -> dict:
    """``ranker.bpr.epochs=20`` arrives as {"ranker": {"bpr.epochs": 20}}: finish the nesting."""
    out: dict = {}
    for key, value in params.items():
        if isinstance(value, dict):
            inner: dict = {}
            for sub, v in value.items():
                head, _, tail = sub.partition(".")
                if tail:
                    inner.setdefault(head, {})[tail] = v
                else:
                    inner[sub] = v
            out[key] = inner
        else:
            out[key] = value
    return out
