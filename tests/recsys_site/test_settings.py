"""Production-safe defaults (issue 15): no process starts on the development settings unless told to, and the
production settings need every secret and URL, pass ``check --deploy`` with no warning, trust the proxy's
X-Forwarded-Proto only when asked, take CSRF origins from the environment, share one Redis cache between processes
and never fall back to a per-machine SQLite file.

Every check runs a real process (``manage.py``, ``celery``, ``gunicorn``, a Python with the production settings) with
an environment built here, never this session's: pytest-django exports DJANGO_SETTINGS_MODULE to this process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HELP = "DJANGO_SETTINGS_MODULE is not set"


def _bare_env(**extra: str) -> dict[str, str]:
    """A minimal environment with no DJANGO_SETTINGS_MODULE; this checkout's code first on the path (the celery
    script's own path does not hold the working directory)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "PYTHONPATH": str(ROOT), **extra}


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _refused(result: subprocess.CompletedProcess, program: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{program} started without DJANGO_SETTINGS_MODULE:\n{output[-3000:]}"
    assert HELP in output, f"{program}: no message naming the variable:\n{output[-3000:]}"
    assert "recsys_site.settings.production" in output and "recsys_site.settings.local" in output, output[-3000:]


# --- finding 9: no default settings module ---------------------------------------------------------------------------
def test_manage_py_without_a_settings_module_refuses_and_says_what_to_set(tmp_path):
    env = _bare_env(VAR_DIR=str(tmp_path))
    _refused(_run([sys.executable, "manage.py", "check"], env), "manage.py check")
    _refused(_run([sys.executable, "manage.py", "migrate", "--noinput"], env), "manage.py migrate")
    assert not (tmp_path / "django.sqlite3").exists(), "migrate ran on the development settings"
    # The same command with the settings named runs: the refusal is about the missing variable, nothing else.
    named = _run([sys.executable, "manage.py", "check"], env | {"DJANGO_SETTINGS_MODULE": "recsys_site.settings.local"})
    assert named.returncode == 0 and "no issues" in named.stdout, named.stderr[-3000:]


def test_celery_without_a_settings_module_refuses_and_says_what_to_set(servers):
    env = _bare_env(CELERY_BROKER_URL=servers["broker_url"])
    _refused(_run([str(BIN / "celery"), "-A", "celery_app", "report"], env), "celery report")
    # A worker would otherwise connect to the broker and run jobs on the development settings; it must stop at once.
    worker = [str(BIN / "celery"), "-A", "celery_app", "worker", "--pool", "solo", "--queues", "default",
              "--hostname", f"refused-{os.getpid()}@%h"]
    _refused(_run(worker, env, timeout=60), "celery worker")


def test_the_wsgi_application_without_a_settings_module_refuses_and_says_what_to_set():
    result = _run([str(BIN / "gunicorn"), "recsys_site.wsgi:application", "--check-config"], _bare_env())
    _refused(result, "gunicorn recsys_site.wsgi:application")


def test_every_process_the_project_starts_names_its_settings():
    """``make run`` names the local settings (the stack passes them on to every child); compose.yaml's are checked by
    test_deploy.py, the tests' and benchmarks' subprocesses name theirs in their environments."""
    dry = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    run = [line for line in dry.stdout.splitlines() if "recsys_site.stack run" in line]
    assert run and "DJANGO_SETTINGS_MODULE=recsys_site.settings.local " in run[-1], dry.stdout


# --- finding 9: the production settings ------------------------------------------------------------------------------
def _production_env(servers, tmp_path: Path, **extra: str) -> dict[str, str]:
    """What an operator gives a production machine (docs/DEPLOY.md), the stores pointed at this session's servers."""
    env = _bare_env(
        DJANGO_SETTINGS_MODULE="recsys_site.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="buddies.example.com,testserver",
        CSRF_TRUSTED_ORIGINS="https://buddies.example.com,https://admin.example.com",
        TRUST_X_FORWARDED_PROTO="true",
        MONGO_URI=servers["mongo_uri"],
        CELERY_BROKER_URL=servers["broker_url"],
        DATABASE_URL="postgres://buddies:secret@postgres.internal:5432/buddies",
        VAR_DIR=str(tmp_path / "var"),
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


PROBE = textwrap.dedent("""
    import json, sys
    import django
    django.setup()
    from django.conf import settings
    from django.test import Client
    out = {"proxy_header": settings.SECURE_PROXY_SSL_HEADER, "csrf_origins": settings.CSRF_TRUSTED_ORIGINS,
           "cache": settings.CACHES["default"], "picks_cache": settings.PICKS_CACHE_URL,
           "database": settings.DATABASES["default"]["ENGINE"], "debug": settings.DEBUG,
           "hsts": [settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
                    settings.SECURE_HSTS_PRELOAD],
           "silenced": settings.SILENCED_SYSTEM_CHECKS}
    # A plain-HTTP request that claims HTTPS in X-Forwarded-Proto, as nginx sends them (and as any client could).
    response = Client(HTTP_X_FORWARDED_PROTO="https").get("/no-such-page")
    out["claims_https"] = [response.status_code, response.headers.get("Location"),
                           response.headers.get("Strict-Transport-Security")]
    if len(sys.argv) > 1:
        from django.core.cache import cache
        if sys.argv[1]:
            cache.set("probe", sys.argv[1], 60)
        out["cached"] = cache.get("probe")
    print(json.dumps(out))
""")


def _probe(env: dict[str, str], *args: str) -> dict:
    result = _run([sys.executable, "-c", PROBE, *args], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_proxy_ssl_header_is_trusted_only_when_asked(servers, tmp_path):
    asked = _probe(_production_env(servers, tmp_path))
    assert asked["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    status, _, hsts = asked["claims_https"]
    assert status == 404 and hsts and "max-age=31536000" in hsts  # served as HTTPS, with HSTS
    for unset in (None, "false"):
        plain = _probe(_production_env(servers, tmp_path, TRUST_X_FORWARDED_PROTO=unset))
        assert plain["proxy_header"] is None, plain
        # Without a proxy said to be in front, the header proves nothing: plain HTTP is redirected to HTTPS.
        assert plain["claims_https"][:2] == [301, "https://testserver/no-such-page"], plain


def test_csrf_trusted_origins_come_from_the_environment(servers, tmp_path):
    probe = _probe(_production_env(servers, tmp_path))
    assert probe["csrf_origins"] == ["https://buddies.example.com", "https://admin.example.com"]
    assert _probe(_production_env(servers, tmp_path, CSRF_TRUSTED_ORIGINS=None))["csrf_origins"] == []


def test_the_cache_is_one_redis_shared_by_every_process(servers, tmp_path):
    import redis

    env = _production_env(servers, tmp_path)
    base = servers["broker_url"].rsplit("/", 1)[0]
    token = secrets.token_hex(8)
    first = _probe(env, token)
    assert first["cache"]["BACKEND"] == "recsys_site.cache.SharedRedisCache"
    assert first["cache"]["LOCATION"] == f"{base}/2", "default: the broker's Redis, database 2"
    assert first["picks_cache"] == f"{base}/1"
    assert first["cached"] == token
    # Another process (another web worker, another machine) sees what the first one stored.
    assert _probe(env, "")["cached"] == token
    assert redis.Redis.from_url(f"{base}/2").get("buddies:1:probe") is not None
    # CACHE_URL names another one.
    assert _probe(env | {"CACHE_URL": f"{base}/5"})["cache"]["LOCATION"] == f"{base}/5"


API_REQUEST = textwrap.dedent("""
    import django
    django.setup()
    from django.test import Client
    response = Client(HTTP_X_FORWARDED_PROTO="https", raise_request_exception=False).get("/api/v1/models")
    print(response.status_code)
""")


def test_the_api_answers_while_the_cache_redis_is_down(servers, tmp_path):
    """The throttling counts live in the shared cache; a Redis that does not answer costs the rate limit, not the
    request (as the picks cache, which also fails open)."""
    from recsys_site.embedded import free_port

    for cache_url in (f"redis://127.0.0.1:{free_port()}/2", None):  # down, then the broker's (a control)
        env = _production_env(servers, tmp_path, CACHE_URL=cache_url, MONGO_DB=f"t_cache_{os.getpid()}")
        result = _run([sys.executable, "-c", API_REQUEST], env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split()[-1] == "200", (cache_url, result.stdout, result.stderr[-3000:])


@pytest.mark.parametrize("unset", ["DATABASE_URL", "DJANGO_SECRET_KEY", "MONGO_URI", "CELERY_BROKER_URL"])
def test_production_refuses_to_start_without_a_required_variable(servers, tmp_path, unset):
    env = _production_env(servers, tmp_path)
    del env[unset]
    result = _run([sys.executable, "manage.py", "check"], env)
    assert result.returncode != 0, result.stdout
    assert f"{unset} is not set: recsys_site.settings.production requires it" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "var" / "django.sqlite3").exists()


def test_production_refuses_the_published_development_key(servers, tmp_path):
    published = "dev-only-insecure-key-change-me"  # recsys_site/settings/base.py, in every clone of the repository
    env = _production_env(servers, tmp_path, DJANGO_SECRET_KEY=published)
    result = _run([sys.executable, "manage.py", "check"], env)
    assert result.returncode != 0 and "published development key" in result.stderr, result.stderr[-3000:]


def test_check_deploy_gives_no_warning_in_a_production_environment(servers, tmp_path):
    env = _production_env(servers, tmp_path)
    probe = _probe(env)
    assert probe["debug"] is False and probe["silenced"] == []
    assert probe["hsts"] == [31536000, True, True]
    assert probe["database"] == "django.db.backends.postgresql"
    cmd = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    result = _run(cmd, env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip() == "System check identified no issues (0 silenced).", result.stdout + result.stderr
    # The check can fail: HSTS off is a warning.
    weak = _run(cmd, env | {"SECURE_HSTS_SECONDS": "0"})
    assert weak.returncode != 0 and "security.W004" in weak.stdout + weak.stderr
