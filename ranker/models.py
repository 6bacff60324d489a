"""Django (SQL) models of the ranker: only what the admin edits. Models, picks and events live in MongoDB."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from ranker.experiments.spec import spec_errors


def _playlists() -> list[str]:
    return ["playlists"]


class Experiment(models.Model):
    """An A/B experiment defined in the admin; it joins (and by name overrides) those in ``settings.EXPERIMENTS``."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True, help_text="Inactive experiments assign nobody; results stay readable.")
    applies_to = models.JSONField(default=_playlists, help_text='Which picks it changes: ["playlists"], ["tracks"] '
                                                                'or both.')
    variants = models.JSONField(help_text='Variant name → {"weight": share, and what it changes: "model_version": '
                                          '"<version>" and/or "playlist_weights": {"discovery": 0.6, …}}. E.g. '
                                          '{"control": {"weight": 0.5}, "new-model": {"weight": 0.5, '
                                          '"model_version": "20261123T…"}}')
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def spec(self) -> dict[str, Any]:
        """The experiment in the shape of a ``settings.EXPERIMENTS`` entry."""
        return {"active": self.active, "applies_to": self.applies_to, "variants": self.variants,
                "description": self.description, "source": "admin"}

    def clean(self) -> None:
        problems = spec_errors(self.name, self.spec(), check_versions=True)
        if problems:
            raise ValidationError(problems)
