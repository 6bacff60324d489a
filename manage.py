#!/usr/bin/env python
"""Django's command-line utility for Buddies."""

import sys


def main() -> None:
    # No default settings module: without DJANGO_SETTINGS_MODULE this stops here, saying what to set, instead of
    # running with the development settings (DEBUG on, a published secret key).
    from django.core.exceptions import ImproperlyConfigured

    from recsys_site.settings import require_settings_module

    try:
        require_settings_module("manage.py")
    except ImproperlyConfigured as exc:
        sys.exit(f"error: {exc}")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
