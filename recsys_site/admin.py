from django.contrib import admin

from .models import Credential


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    """Staff see and revoke credentials here (untick active); tokens are made with ``manage.py create_credential``."""

    list_display = ("kind", "app", "user", "prefix", "scopes", "any_user", "active", "created_at")
    list_filter = ("kind", "active", "any_user")
    search_fields = ("app", "user", "prefix")
    readonly_fields = ("key_hash", "prefix", "kind", "app", "user", "created_at")

    def has_add_permission(self, request) -> bool:
        return False  # a token must be shown to whoever made it, once: manage.py create_credential
