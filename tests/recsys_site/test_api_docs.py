"""/api/docs/ (Swagger UI) works offline: every file the page loads is one of Buddies' own static files (the pinned
drf-spectacular-sidecar package), collected by ``collectstatic`` and served by the web process, never a CDN."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.management import call_command
from django.test import Client

URL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_swagger_ui_loads_only_local_static_files_and_they_are_served(settings, tmp_path):
    # As `make run` and the image do: collect the static files, then serve them from STATIC_ROOT (WhiteNoise).
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", "-v", "0")
    client = Client(HTTP_HOST="localhost")

    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", html, re.IGNORECASE), "an absolute URL in the page"
    urls = URL_ATTR.findall(html)
    scripts = [u for u in urls if u.endswith(".js")]
    assert any("swagger-ui-bundle" in u for u in scripts) and any(u.endswith(".css") for u in urls), urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url}: not on this server"
        assert parts.path.startswith(f"/{settings.STATIC_URL.strip('/')}/"), f"{url}: not a static file"
        response = client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        body = _body(response)
        if url in scripts:
            assert "javascript" in response.headers["Content-Type"] and len(body) > 100_000, url  # the real bundle
