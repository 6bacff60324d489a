"""Dashboard tests share the module-wide ``live`` world (demo playlists, a promoted model, buddies) from
tests/conftest.py and clear the dashboard's per-process caches so one test's database never leaks into another's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_dashboard_caches():
    from dashboard.cache import clear_all

    clear_all()
    yield
    clear_all()
