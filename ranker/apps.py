from django.apps import AppConfig


class RankerConfig(AppConfig):
    name = "ranker"
    verbose_name = "Ranker: BPR track and playlist picks"
