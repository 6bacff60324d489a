from django.apps import AppConfig


class RecsysSiteConfig(AppConfig):
    name = "recsys_site"
    verbose_name = "Buddies site"

    def ready(self) -> None:
        from . import job_definitions  # noqa: F401  (registers the jobs: Django's place for start-up wiring)
