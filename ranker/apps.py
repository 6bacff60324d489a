from django.apps import AppConfig


class RankerConfig(AppConfig):
    name = "ranker"
    verbose_name = "Ranker: BPR track and playlist picks"

    def ready(self) -> None:
        from recsys_site.metrics import on_scrape  # registers: Django's place for start-up wiring

        from .watch.services import watch_gauges_refresh  # registers the watch's gauges with /metrics

        on_scrape(watch_gauges_refresh)
