"""The trader's trades and profile pages."""

from datetime import datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.core.validators import MaxValueValidator, MinValueValidator
from django.shortcuts import redirect, render
from django.utils import timezone

from brokers.decorators import trader_page
from brokers.models import BrokerAccount
from journal.models import (
    EARLIEST_TRADE_DATE,
    LATEST_TRADE_DATE,
    TRADE_DATE_RULE,
    TraderProfile,
    time_zone_choices,
)
from journal.selectors import symbols_traded_by, trades_visible_to

TRADES_PER_PAGE = 50
TRADE_DATE_BOUNDS = [
    MinValueValidator(EARLIEST_TRADE_DATE, message=TRADE_DATE_RULE),
    MaxValueValidator(LATEST_TRADE_DATE, message=TRADE_DATE_RULE),
]


class TradeFilterForm(forms.Form):
    account = forms.ModelChoiceField(queryset=BrokerAccount.objects.none(), required=False, empty_label="All accounts")
    symbol = forms.CharField(required=False, max_length=64, help_text="The symbol or its start, e.g. ES.")
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}), validators=TRADE_DATE_BOUNDS
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}), validators=TRADE_DATE_BOUNDS
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = BrokerAccount.objects.filter(connection__owner=user).select_related(
            "connection"
        )
        self.fields["account"].label_from_instance = lambda a: f"{a.name or a.external_id} · {a.connection.label}"

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def apply(self, trades):
        """Narrow the trades; dates are whole days in the trader's (active) time zone, both ends included."""
        data = self.cleaned_data
        zone = timezone.get_current_timezone()
        if data.get("account"):
            trades = trades.filter(account=data["account"])
        if data.get("symbol"):
            # By prefix, any case: "ES" finds ESZ6 and ESH7 (not MESZ6); a whole symbol still finds just itself.
            trades = trades.filter(symbol__istartswith=data["symbol"].strip())
        if data.get("date_from"):
            trades = trades.filter(executed_at__gte=datetime.combine(data["date_from"], time.min, zone))
        if data.get("date_to"):
            day_after = data["date_to"] + timedelta(days=1)
            trades = trades.filter(executed_at__lt=datetime.combine(day_after, time.min, zone))
        return trades


@trader_page
def trade_list(request):
    trades = (
        trades_visible_to(request.user).select_related("account", "account__connection").order_by("-executed_at", "-id")
    )
    form = TradeFilterForm(request.GET or None, user=request.user)
    if form.is_bound and form.is_valid():
        trades = form.apply(trades)
    elif form.is_bound:
        # An invalid filter shows nothing rather than silently showing everything.
        trades = trades.none()
    symbols = symbols_traded_by(request.user)
    page = Paginator(trades, TRADES_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "journal/trade_list.html",
        {"page": page, "form": form, "symbols": symbols, "filtered": form.is_bound and form.has_changed()},
    )


class ProfileForm(forms.ModelForm):
    time_zone = forms.ChoiceField(label="Time zone", help_text="Trades, syncs and schedules are shown in this zone.")

    class Meta:
        model = TraderProfile
        fields = ["time_zone"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = time_zone_choices(self.instance.time_zone)


@trader_page
def profile(request):
    instance = TraderProfile.objects.filter(user=request.user).first() or TraderProfile(user=request.user)
    form = ProfileForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Times are now shown in {form.cleaned_data['time_zone']}.")
        return redirect("journal:profile")
    return render(request, "journal/profile.html", {"form": form, "now": timezone.now()})
