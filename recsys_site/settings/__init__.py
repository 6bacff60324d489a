"""Split settings: ``base`` holds everything, the others override a few values.

Pick one with ``DJANGO_SETTINGS_MODULE`` (``recsys_site.settings.local`` by default).
"""
