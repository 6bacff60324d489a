"""Open every dashboard page in a real headless Chromium, as a staff user would, and report on each.

For each page: the time from clicking its menu link to its main chart drawn with no callback still loading, the
browser console errors, and a screenshot; then the page's control (if given) is used and the page checked again.
The browser test runs this against a test server; ``python -m dashboard.browser_check --url ...`` runs it against
any running Buddies (the figures in the closing notes come from here). Needs Debian's ``chromium`` (``make test``
installs it) and the ``playwright`` package, which drives that browser; Playwright's own browsers are never used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django

from .app import PAGES

# Without the background-networking flags Chromium keeps dialling Google services, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
IDLE = "() => document.querySelector('[data-dash-is-loading=\"true\"]') === null"
SHOWN = """(title) => { const h = document.querySelector('.page h2');
                          return h !== null && h.innerText.startsWith(title)
                                 && document.querySelector('.page .main-chart .main-svg') !== null
                                 && document.querySelector('[data-dash-is-loading="true"]') === null; }"""

Action = Callable[[Any], str]  # operates a page's control; returns what it did, raises if the page did not respond


@dataclass
class Visit:
    path: str
    title: str
    render_ms: float
    screenshot: Path
    console_errors: list[str] = field(default_factory=list)
    action: str = ""
    action_screenshot: Path | None = None


def chromium_path() -> str:
    """Debian's chromium; a clear error (not a download) when it is missing."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium is not installed: `make test` installs Debian's (apt-get install chromium)")
    return found


def wait_idle(page: Any, timeout_ms: float = 30_000) -> None:
    """Wait until no Dash callback is in flight (after using a control)."""
    page.wait_for_timeout(150)  # let the callback request leave before looking for its loading flag
    page.wait_for_function(IDLE, timeout=timeout_ms)


def open_page(tab: Any, base_url: str, path: str, title: str, timeout_ms: float) -> float:
    """Go to a page the way an analyst does, by its link in the menu, and return the milliseconds until its main
    chart is drawn and no callback is loading (the app itself is already loaded, as after the first page)."""
    href = "/dashboard/" + path.strip("/")
    if tab.url.rstrip("/") == f"{base_url}{href}".rstrip("/"):  # a link to the page we are on does nothing
        other = "/dashboard/jobs" if path != "/jobs" else "/dashboard/"
        tab.click(f"nav a[href='{other}']")
        tab.wait_for_function(IDLE, timeout=timeout_ms)
    began = time.perf_counter()
    tab.click(f"nav a[href='{href}']")
    tab.wait_for_function(SHOWN, arg=title, timeout=timeout_ms)
    return (time.perf_counter() - began) * 1000


def visit_all(base_url: str, *, username: str, password: str, out_dir: Path,
              pages: list[tuple[str, str]] | None = None, actions: dict[str, Action] | None = None,
              timeout_ms: float = 30_000) -> list[Visit]:
    """Log in through Django's login page, then open each (path, title) under /dashboard/ and report on it."""
    from playwright.sync_api import sync_playwright  # lazy: an optional tool: only the browser check needs it

    pages = pages or [(page.PATH, page.TITLE) for page in PAGES]
    actions = actions or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    visits: list[Visit] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            tab.goto(f"{base_url}/admin/login/?next=/dashboard/")
            tab.fill("#id_username", username)
            tab.fill("#id_password", password)
            tab.click("input[type=submit]")
            tab.wait_for_url(f"{base_url}/dashboard/", timeout=timeout_ms)
            for path, title in pages:
                errors.clear()
                name = path.strip("/") or "overview"
                render_ms = open_page(tab, base_url, path, title, timeout_ms)
                visit = Visit(path, title, render_ms, out_dir / f"{name}.png")
                tab.screenshot(path=str(visit.screenshot), full_page=True)
                if path in actions:
                    visit.action = actions[path](tab)
                    wait_idle(tab, timeout_ms)
                    visit.action_screenshot = out_dir / f"{name}-after.png"
                    tab.screenshot(path=str(visit.action_screenshot), full_page=True)
                visit.console_errors = list(errors)
                visits.append(visit)
        finally:
            browser.close()
    return visits


def report(visits: list[Visit]) -> str:
    lines = [f"{'page':<14} {'render ms':>9}  {'console errors':>14}  screenshot", "-" * 72]
    for v in visits:
        lines.append(f"{v.title:<14} {v.render_ms:>9.0f}  {len(v.console_errors):>14}  {v.screenshot}")
        lines += [f"    ! {error}" for error in v.console_errors]
        if v.action:
            lines.append(f"    control: {v.action} → {v.action_screenshot}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where Buddies runs")
    parser.add_argument("--username", required=True, help="a staff user")
    parser.add_argument("--password", default=os.environ.get("DASHBOARD_PASSWORD"),
                        help="its password (default: $DASHBOARD_PASSWORD)")
    parser.add_argument("--out", type=Path, default=Path("var/dashboard-check"), help="where screenshots go")
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("give --password or set DASHBOARD_PASSWORD")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_site.settings.local")

    django.setup()  # the page list comes from dashboard.app, whose pages import the packages' selectors
    visits = visit_all(args.url.rstrip("/"), username=args.username, password=args.password, out_dir=args.out)
    print(report(visits))
    return 1 if any(v.console_errors for v in visits) else 0


if __name__ == "__main__":
    sys.exit(main())
