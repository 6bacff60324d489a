from django.apps import AppConfig


class RecsysSiteConfig(AppConfig):
    name = "recsys_site"
    verbose_name = "Buddies site"
