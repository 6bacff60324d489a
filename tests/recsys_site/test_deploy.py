"""compose.yaml describes a deployment that can run: every Buddies service's command is a real entry point of the
project (it runs here with ``--help``, through this checkout's .venv), and ``manage.py check --deploy`` passes with
the production environment the file gives (its URLs pointed at this session's real servers). No docker needed."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
BIN = Path(sys.executable).parent
INFRASTRUCTURE = {"mongo", "redis", "postgres", "nginx"}  # official images; the rest run the Buddies image
# What compose would read from the operator's environment or .env: test values.
OPERATOR = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "BUDDIES_HOST": "buddies.example.com",
            "POSTGRES_PASSWORD": secrets.token_urlsafe(16)}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable syntax: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``; a missing required
    variable fails with compose's message."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if variables.get(name):
            return variables[name]
        if op == ":-":
            return arg
        if op == ":?":
            raise KeyError(f"compose.yaml needs {name}: {arg}")
        return ""

    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}", one, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _environment(service: dict, variables: dict[str, str]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value), variables) for key, value in env.items()}


def _buddies_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if _image_name(s) not in INFRASTRUCTURE}


def _image_name(service: dict) -> str:
    image = interpolate(service.get("image", ""), {})
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def _local(command: list[str]) -> list[str]:
    """A service's command as this checkout runs it: the image's ``python``, ``gunicorn`` and ``celery`` are the
    project's virtualenv's, its working directory the repository root. Anything else is not an entry point."""
    program, *args = command
    if program == "python":
        assert args[0] == "manage.py", f"{command}: python runs manage.py, nothing else"
        return [sys.executable, *args]
    assert program in ("gunicorn", "celery"), f"{command}: not a Buddies entry point (no shells, no scripts)"
    return [str(BIN / program), *args]


def _here(env: dict[str, str], servers: dict, tmp_path: Path) -> dict[str, str]:
    """The container's environment on this machine: the session's real servers, and the container's own paths
    (volumes, the tmpfs) under ``tmp_path``."""
    env = env | {"MONGO_URI": servers["mongo_uri"], "CELERY_BROKER_URL": servers["broker_url"]}
    for key in ("VAR_DIR", "MODEL_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        if key in env:
            env[key] = str(tmp_path / env[key].strip("/"))
            Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return subprocess.run(cmd, cwd=ROOT, env={**keep, **env}, capture_output=True, text=True, timeout=timeout)


def test_the_file_describes_every_part_of_the_many_machine_setup(compose):
    services = compose["services"]
    buddies = _buddies_services(compose)
    mongo = [s for s in services.values() if _image_name(s) == "mongo"]
    assert len(mongo) >= 3 and all("--replSet" in s["command"] for s in mongo), "MongoDB as a replica set"
    assert any(_image_name(s) == "redis" for s in services.values())
    nginx = next(s for s in services.values() if _image_name(s) == "nginx")
    config = (ROOT / nginx["volumes"][0].split(":")[0]).read_text()
    assert "proxy_pass http://buddies_web" in config and "server web:8000" in config
    web = services["web"]
    assert web["command"][:2] == ["gunicorn", "recsys_site.wsgi:application"] and web["deploy"]["replicas"] > 1
    queues = {}
    for name, service in buddies.items():
        command = service["command"]
        if command[0] == "celery" and "worker" in command:
            queues[name] = set(command[command.index("--queues") + 1].split(","))
    from celery_app import app

    known = {q.name for q in app.conf.task_queues}
    assert set().union(*queues.values()) == known, f"every queue consumed, no unknown one: {queues}"
    assert queues["worker"] == {"default"} and buddies["worker"]["deploy"]["replicas"] > 1
    gpu = buddies["worker-gpu"]
    assert queues["worker-gpu"] == {"gpu"}
    assert queues["worker-refresh"] == {"refresh"}  # feedback refreshes never queue ahead of job steps
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert _environment(gpu, OPERATOR)["RECSYS_DEVICE"] == "cuda"
    beats = [s for s in buddies.values() if "beat" in s["command"]]
    assert len(beats) == 1 and beats[0]["deploy"]["replicas"] == 1, "one beat, or every job starts twice"


def test_each_service_gets_the_production_environment_it_needs(compose):
    for name, service in _buddies_services(compose).items():
        env = _environment(service, OPERATOR)
        assert env["DJANGO_SETTINGS_MODULE"] == "recsys_site.settings.production", name
        assert "replicaSet=" in env["MONGO_URI"] and env["MONGO_URI"].count("mongo") >= 3, name
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:"), name
        assert env["DATABASE_URL"].startswith("postgres://"), f"{name}: one Django database for every web machine"
        assert env["DJANGO_SECRET_KEY"] == OPERATOR["DJANGO_SECRET_KEY"], name
        # nginx is in front (TLS, X-Forwarded-Proto); the public origin may post forms; one cache for all.
        assert env["TRUST_X_FORWARDED_PROTO"] == "true", name
        assert env["CSRF_TRUSTED_ORIGINS"] == f"https://{OPERATOR['BUDDIES_HOST']}", name
        assert env["CACHE_URL"].startswith("redis://redis:"), name
        assert any(v.split(":")[1] == env["MODEL_DIR"] for v in service["volumes"]), f"{name}: MODEL_DIR on a volume"
    with pytest.raises(KeyError, match="DJANGO_SECRET_KEY"):
        _environment(compose["services"]["web"], {})  # compose refuses to start without the secret


def test_every_buddies_command_is_a_real_entry_point(compose):
    for name, service in _buddies_services(compose).items():
        result = _run([*_local(service["command"]), "--help"], _environment(service, OPERATOR))
        assert result.returncode == 0, f"{name}: {service['command']} --help failed:\n{result.stderr[-2000:]}"
        assert "usage" in result.stdout.lower(), f"{name}: no usage text"


def test_the_web_command_loads_the_application(compose, servers, tmp_path):
    """``gunicorn --check-config`` imports the WSGI application with the web service's production environment."""
    web = compose["services"]["web"]
    env = _here(_environment(web, OPERATOR), servers, tmp_path)
    result = _run([*_local(web["command"]), "--check-config"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    bogus = _run([*_local([*web["command"][:1], "recsys_site.wsgi:nothing", *web["command"][2:]]), "--check-config"],
                 env)
    assert bogus.returncode != 0  # the check can fail


def test_check_deploy_passes_with_the_production_environment(compose, servers, tmp_path):
    environments = {tuple(sorted(_environment(s, OPERATOR).items())) for s in _buddies_services(compose).values()}
    for env in map(dict, environments):
        env = _here(env, servers, tmp_path)
        result = _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "System check identified no issues (0 silenced)." in result.stdout
    # The same check fails when the production environment is not complete: it does test something.
    weak = _here(dict(next(iter(environments))), servers, tmp_path) | {"DJANGO_SECRET_KEY": "short",
                                                                       "SECURE_SSL_REDIRECT": "false"}
    result = _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], weak)
    assert result.returncode != 0 and "security.W009" in result.stderr + result.stdout
