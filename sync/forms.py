"""The file import form: one of the trader's own accounts, the file, and what the file cannot say by itself."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings

from brokers.models import BrokerAccount
from journal.files.formats import CHOICES
from journal.files.metatrader import contract_sizes
from journal.models import time_zone_choices, validate_time_zone


class FileImportForm(forms.Form):
    account = forms.ModelChoiceField(queryset=BrokerAccount.objects.none(), empty_label=None)
    file = forms.FileField(help_text="A broker's export as you downloaded it (CSV, XML or HTML), or the template CSV.")
    format = forms.ChoiceField(
        choices=[("", "Recognise it from the file"), *CHOICES],
        required=False,
        help_text="Choose only when the page asks, or to be sure.",
    )
    time_zone = forms.ChoiceField(
        required=False,
        label="Time zone of the file's times",
        help_text="For files whose times carry no offset. Empty: Tradovate Central Time (Chicago), NinjaTrader your "
        "profile's zone, MetaTrader UTC (choose your broker server's zone), the template none (each time "
        "needs its offset).",
    )

    contract_sizes = forms.CharField(
        required=False,
        label="MetaTrader contract sizes",
        max_length=2000,
        help_text="MetaTrader reports lots; the journal stores units, as the sync does. For a symbol the sync has "
        "not met yet, give its contract size: EURUSD=100000, XAUUSD=100.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = (
            BrokerAccount.objects.filter(connection__owner=user)
            .select_related("connection")
            .order_by("connection__label", "name")
        )
        self.fields["account"].label_from_instance = lambda a: f"{a.connection.label} · {a.name or a.external_id}"
        self.fields["time_zone"].choices = [("", "The format's default"), *time_zone_choices()]

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.FILE_IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is larger than {settings.FILE_IMPORT_MAX_BYTES // 2**20} MB: export a shorter period."
            )
        return upload

    def clean_time_zone(self):
        name = self.cleaned_data["time_zone"]
        if not name:
            return None
        validate_time_zone(name)
        return ZoneInfo(name)

    def clean_contract_sizes(self):
        try:
            return contract_sizes(self.cleaned_data["contract_sizes"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
