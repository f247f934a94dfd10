"""API keys in the admin: created through ``api_key_create`` (the raw key shown
once, on a page that is never stored or redirected to), renamed, rate-limited and
revoked, never deleted (the record stays)."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse

from horizon_quota.errors import ServiceError
from quotas import services
from quotas.access import keys
from quotas.models import ApiKey


class ApiKeyAddForm(forms.ModelForm):
    """Creates the key through ``api_key_create`` in clean(); the raw key is kept on
    the form only to render the one confirmation page."""

    raw_key: str | None = None
    scope = forms.CharField(
        required=False,
        max_length=270,
        help_text="Optional: confine the key to an entity's subtree across every "
        "resource type — organization:ID, team:ID, or a quota id (its entity).",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "role", "expires_at", "write_rate"]

    def _post_clean(self):
        pass  # the service validates and saves

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.instance, self.raw_key = keys.api_key_create(
                name=cleaned.get("name") or "",
                role=cleaned.get("role") or "",
                scope=cleaned.get("scope") or None,
                expires_at=cleaned.get("expires_at"),
                write_rate=cleaned.get("write_rate") or "",
            )
        except ServiceError as exc:
            raise ValidationError(exc.message) from None
        self.instance._raw_key = self.raw_key  # for ApiKeyAdmin.response_add only
        return cleaned


class ApiKeyChangeForm(forms.ModelForm):
    revoke = forms.BooleanField(
        required=False,
        help_text="Revoke the key: the API refuses it from now on. Cannot be undone.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "write_rate"]

    def clean_write_rate(self):
        try:
            return keys.write_rate_clean(self.cleaned_data.get("write_rate"))
        except ServiceError as exc:
            raise ValidationError(exc.fields.get("write_rate") or exc.message) from None


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "role",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["role"]
    search_fields = ["name", "prefix"]
    actions = ["revoke_selected"]
    # The hash is never shown: it is in no form and no list.
    _CHANGE_READONLY = [
        "prefix",
        "role",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ApiKeyChangeForm if obj is not None else ApiKeyAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "role", "scope", "expires_at", "write_rate"]
        if obj.revoked_at is not None:
            return ["name", "write_rate", *self._CHANGE_READONLY]
        return ["name", "write_rate", "revoke", *self._CHANGE_READONLY]

    def get_readonly_fields(self, request, obj=None):
        return self._CHANGE_READONLY if obj is not None else []

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # revoke instead: keep the record
        return actions

    def save_model(self, request, obj, form, change):
        if not change:
            return  # ApiKeyAddForm.clean() created it through the service
        changed = [f for f in ("name", "write_rate") if f in form.changed_data]
        if changed:
            obj.save(update_fields=changed)
        if form.cleaned_data.get("revoke"):
            try:
                keys.api_key_revoke(
                    key_id_or_prefix=obj.prefix,
                    actor=services.Actor.for_staff_user(request.user),
                )
            except ServiceError as exc:
                self.message_user(request, exc.message, level=messages.ERROR)

    def response_add(self, request, obj, post_url_continue=None):
        # The one page that shows the secret: rendered here, never stored or
        # redirected to, so it cannot be shown again.
        response = TemplateResponse(
            request,
            "admin/quotas/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "API key created",
                "key": obj,
                "raw_key": obj._raw_key,
                "opts": self.opts,
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected API keys")
    def revoke_selected(self, request, queryset):
        actor = services.Actor.for_staff_user(request.user)
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            try:
                keys.api_key_revoke(key_id_or_prefix=key.prefix, actor=actor)
            except ServiceError as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
            else:
                revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).")
