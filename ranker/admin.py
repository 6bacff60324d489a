from django.contrib import admin

from .models import Experiment


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "active", "applies_to", "variant_names", "updated")
    list_filter = ("active",)
    search_fields = ("name", "description")

    @admin.display(description="variants")
    def variant_names(self, obj: Experiment) -> str:
        return ", ".join(obj.variants or {})
