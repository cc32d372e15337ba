"""Admin for connections, accounts and sync logs. Every write goes through brokers.services."""

import gzip
import io
import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django_celery_beat.models import PeriodicTask

from brokers import periodic_tasks, services
from brokers.models import ApiToken, BrokerAccount, BrokerConnection, RunArchive, SnapTradeUser, SyncLog
from brokers.providers.archive import unpacked
from brokers.providers.registry import provider_choices


class BrokerConnectionAdminForm(forms.ModelForm):
    broker_type = forms.ChoiceField(choices=provider_choices)
    new_credentials = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Replace credentials",
        help_text='JSON object of the provider\'s fields, e.g. {"api_key": "..."}. '
        "Stored encrypted; the current values are never shown. Leave empty to keep them.",
    )

    class Meta:
        model = BrokerConnection
        fields = ["owner", "broker_type", "label", "environment", "sync_enabled", "sync_interval_min"]

    @method_decorator(sensitive_variables())
    def clean_new_credentials(self):
        raw = self.cleaned_data["new_credentials"].strip()
        if not raw:
            if self.instance.pk is None:
                raise ValidationError("A new connection needs its credentials.")
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValidationError("Credentials must be a JSON object.") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValidationError("Credentials must be a JSON object of text values.")
        return value

    @method_decorator(sensitive_variables())
    def clean(self):
        # The model's own rules (interval, label, environment) run in ModelForm's full_clean;
        # the provider's rules for the credentials are checked here.
        cleaned = super().clean()
        credentials = cleaned.get("new_credentials")
        broker_type = cleaned.get("broker_type") or self.instance.broker_type
        if self.instance.pk is None and broker_type:
            try:
                # A broker that signs in on its own pages has no session to start from here.
                services.refuse_oauth_without_sign_in(broker_type, None)
            except ValidationError as exc:
                self.add_error("broker_type", exc.messages)
                return cleaned
        if credentials is not None and self.instance.pk is not None:
            try:
                services.refuse_credentials_of_sign_in(broker_type)
            except ValidationError as exc:
                self.add_error("new_credentials", exc.messages)
                return cleaned
        if credentials is not None and broker_type:
            environment = cleaned.get("environment", self.instance.environment)
            try:
                services.validate_credentials(broker_type, credentials, environment)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    self.add_error(field if field in self.fields else "new_credentials", errors)
        return cleaned


@admin.register(BrokerConnection)
class BrokerConnectionAdmin(admin.ModelAdmin):
    form = BrokerConnectionAdminForm
    list_display = ["label", "owner", "broker_type", "status", "sync_enabled", "sync_interval_min", "last_sync_at"]
    list_filter = ["status", "sync_enabled", "broker_type"]
    search_fields = ["label", "owner__username", "owner__email"]
    readonly_fields = [
        "status",
        "credentials_rejected",
        "last_sync_at",
        "last_success_at",
        "last_sync_error",
        "consecutive_failures",
        "periodic_task_link",
        "created_at",
        "updated_at",
    ]
    actions = ["sync_now", "enable_auto_sync", "disable_auto_sync"]

    @method_decorator(sensitive_post_parameters())
    def changeform_view(self, request, *args, **kwargs):
        return super().changeform_view(request, *args, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # The broker and environment of an existing connection are fixed: its accounts belong to them.
        extra = ["owner", "broker_type", "environment"] if obj else []
        return [*extra, *self.readonly_fields]

    @admin.display(description="Schedule")
    def periodic_task_link(self, obj):
        task = PeriodicTask.objects.filter(name=periodic_tasks.task_name(obj.pk)).first()
        if task is None:
            return "missing (run manage.py reconcile_schedules)"
        url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
        return format_html('<a href="{}">{}</a> ({})', url, task.name, "enabled" if task.enabled else "disabled")

    @method_decorator(sensitive_variables())
    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = services.connection_create(
                owner=data["owner"],
                broker_type=data["broker_type"],
                label=data["label"],
                environment=data.get("environment", ""),
                credentials=data["new_credentials"],
                sync_enabled=data["sync_enabled"],
                sync_interval_min=data["sync_interval_min"],
            )
            obj.pk = created.pk
            return
        services.connection_update(
            obj.pk,
            label=data["label"],
            credentials=data.get("new_credentials"),
            sync_enabled=data["sync_enabled"],
            sync_interval_min=data["sync_interval_min"],
        )

    def delete_model(self, request, obj):
        services.connection_delete(obj.pk)

    def delete_queryset(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            services.connection_delete(pk)

    @admin.action(description="Sync now")
    def sync_now(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            periodic_tasks.request_sync_now(pk, trigger=SyncLog.Trigger.MANUAL)
        self.message_user(request, f"Queued a sync of {queryset.count()} connection(s).", messages.SUCCESS)

    @admin.action(description="Enable auto-sync")
    def enable_auto_sync(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            services.update_sync_enabled(pk, True)
        self.message_user(request, f"Auto-sync enabled for {queryset.count()} connection(s).", messages.SUCCESS)

    @admin.action(description="Disable auto-sync")
    def disable_auto_sync(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            services.update_sync_enabled(pk, False)
        self.message_user(request, f"Auto-sync disabled for {queryset.count()} connection(s).", messages.SUCCESS)


@admin.register(BrokerAccount)
class BrokerAccountAdmin(admin.ModelAdmin):
    list_display = ["external_id", "name", "connection", "currency", "sync_cursor", "is_active"]
    list_filter = ["is_active", "connection__broker_type"]
    search_fields = ["external_id", "name", "connection__label"]
    readonly_fields = ["connection", "external_id", "sync_cursor", "created_at"]


# How much of one archived body the admin shows: an answer may be a year's report.
SHOWN_BODY_CHARS = 64 * 1024


class RunArchiveInline(admin.TabularInline):
    """The run's archived parts (sync.archiving), each opened on its own page."""

    model = RunArchive
    fields = ["part", "kind", "account", "answers", "size", "not_kept"]
    readonly_fields = fields
    verbose_name_plural = "archived answers and files"
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="part")
    def part(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:brokers_runarchive_change", args=[obj.pk]), obj)


@admin.register(RunArchive)
class RunArchiveAdmin(admin.ModelAdmin):
    """A run's archived broker answers (secrets blanked when kept) or imported file, read-only."""

    list_display = ["__str__", "sync_log", "kind", "answers", "size", "not_kept", "created_at"]
    list_filter = ["kind", "sync_log__connection__broker_type"]
    search_fields = ["sync_log__connection__label", "account__external_id", "file_name"]
    list_select_related = ["sync_log__connection", "account"]
    exclude = ["content"]
    readonly_fields = [
        "sync_log",
        "account",
        "kind",
        "answers",
        "size",
        "read_since",
        "read_until",
        "file_name",
        "not_kept",
        "created_at",
        "contents",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="contents")
    def contents(self, obj):
        if not obj.content:
            return "Nothing kept."
        if obj.kind == RunArchive.Kind.FILE:
            # Only the start is read: a file may be a hundred MB once decompressed.
            with gzip.GzipFile(fileobj=io.BytesIO(bytes(obj.content))) as file:
                start = file.read(SHOWN_BODY_CHARS + 1).decode("utf-8", "replace")
            return format_html("<pre>{}</pre>", _shown(start))
        rows = (
            (i, a.method, a.path, a.status, a.content_type, f"{len(a.body):,}", _shown(a.body))
            for i, a in enumerate(unpacked(bytes(obj.content)), 1)
        )
        answers = format_html_join(
            "",
            "<details><summary>{}. {} {} — HTTP {}, {}, {} characters</summary><pre>{}</pre></details>",
            rows,
        )
        return format_html("<div>{}</div>", answers)


def _shown(text: str) -> str:
    if len(text) <= SHOWN_BODY_CHARS:
        return text
    return f"{text[:SHOWN_BODY_CHARS]}\n… (only the first {SHOWN_BODY_CHARS:,} characters are shown)"


@admin.register(SyncLog)
class SyncLogAdmin(admin.ModelAdmin):
    list_display = [
        "connection",
        "trigger",
        "status",
        "started_at",
        "duration_ms",
        "trades_imported",
        "trades_skipped",
        "attempt",
    ]
    list_filter = ["status", "trigger", "connection__broker_type"]
    search_fields = ["connection__label", "task_id", "error_message"]
    date_hierarchy = "started_at"
    inlines = [RunArchiveInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SnapTradeUser)
class SnapTradeUserAdmin(admin.ModelAdmin):
    """Who is registered at SnapTrade; the secrets stay encrypted and are never shown or edited here."""

    list_display = ("owner", "user_id", "client_id", "personal_key", "created_at")
    readonly_fields = ("owner", "user_id", "client_id", "personal_key", "created_at")
    exclude = ("secrets_ciphertext",)

    def has_add_permission(self, request):
        return False


class ApiTokenAdminForm(forms.ModelForm):
    lifetime_days = forms.IntegerField(
        min_value=1, max_value=3650, initial=settings.API_TOKEN_LIFETIME_DAYS, help_text="Days until it stops working."
    )

    class Meta:
        model = ApiToken
        fields = ["owner", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Make a token (shown once), see who has which and when it was last used, revoke one by deleting it."""

    list_display = ["prefix", "name", "owner", "created_at", "expires_at", "last_used_at"]
    search_fields = ["name", "owner__username", "prefix"]
    readonly_fields = ["prefix", "created_at", "expires_at", "last_used_at"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAdminForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["owner", "name", "lifetime_days"] if obj is None else ["owner", "name", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["owner", *self.readonly_fields]

    @method_decorator(sensitive_variables())
    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        created, token = services.api_token_create(
            owner=form.cleaned_data["owner"],
            name=form.cleaned_data["name"],
            lifetime_days=form.cleaned_data["lifetime_days"],
        )
        obj.pk = created.pk
        # The one time it is shown: only its hash is kept.
        self.message_user(request, f"Copy it now, it is not shown again: {token}", messages.SUCCESS)
