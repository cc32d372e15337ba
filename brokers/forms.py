"""Forms for the trader's pages; they validate and hand over to the services."""

from django import forms
from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_variables

from brokers.crypto import CredentialsUnreadable
from brokers.models import INTERVAL_RANGE, INTERVAL_RULE, BrokerConnection
from brokers.providers.registry import provider_choices
from brokers.providers.types import CredentialField

ROUND_INTERVALS = (5, 10, 15, 20, 30, 45, 60)
CREDENTIAL_PREFIX = "cred_"


def model_rules(name: str) -> list:
    """The model field's own validators: the form shows their errors at once, without a copy of them."""
    return list(BrokerConnection._meta.get_field(name).validators)


def interval_field(**kwargs) -> forms.IntegerField:
    """The interval as a whole number, judged by the model's rule (min and max only hint the browser)."""
    return forms.IntegerField(
        label="Sync interval (minutes)",
        # Shown as a message on the brokers page too, where the field is not beside it: name it.
        error_messages={"invalid": INTERVAL_RULE, "required": INTERVAL_RULE},
        validators=model_rules("sync_interval_min"),
        widget=forms.NumberInput(
            attrs={"min": settings.SYNC_INTERVAL_SHORTEST_MIN, "max": settings.SYNC_INTERVAL_LONGEST_MIN}
        ),
        **kwargs,
    )


def label_field(**kwargs) -> forms.CharField:
    return forms.CharField(max_length=100, validators=model_rules("label"), **kwargs)


def interval_choices(current: int | None = None) -> list[int]:
    """The round intervals, plus the connection's own one when the admin or API set another."""
    values = set(ROUND_INTERVALS)
    if current is not None:
        values.add(current)
    return sorted(values)


class SuggestingInput(forms.TextInput):
    """A text box whose datalist htmx fills from the provider's suggestions as the trader types.

    The other fields that are not secret go along (hx-include), so a suggestion can depend on
    them (MetaTrader's servers on the platform) while no password ever lands in a query string;
    without JavaScript it is a plain text box.
    """

    def __init__(self, url: str, include: str):
        super().__init__(attrs={"autocomplete": "off"})
        self.url = url
        self.include = include

    def render(self, name, value, attrs=None, renderer=None):
        options = f"{(attrs or {}).get('id') or name}-options"
        attrs = {
            **(attrs or {}),
            "list": options,
            "hx-get": self.url,
            "hx-trigger": "input changed delay:300ms",
            "hx-target": f"#{options}",
            "hx-include": self.include,
        }
        return format_html('{}<datalist id="{}"></datalist>', super().render(name, value, attrs, renderer), options)


def _credential_form_field(spec: CredentialField, *, keep_saved_secret: bool, provider_class) -> forms.Field:
    if spec.choices:
        field = forms.ChoiceField(choices=spec.choices, required=spec.required)
    elif spec.secret:
        # render_value=False: a secret typed or saved once never goes back into the page.
        field = forms.CharField(
            required=spec.required and not keep_saved_secret,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
            strip=True,
        )
    elif spec.suggest:
        url = reverse("brokers:suggest", args=[provider_class.key, spec.name])
        shown = [f"[name='{CREDENTIAL_PREFIX}{f.name}']" for f in provider_class.credential_fields if not f.secret]
        field = forms.CharField(required=spec.required, strip=True, widget=SuggestingInput(url, ", ".join(shown)))
    else:
        field = forms.CharField(
            required=spec.required, strip=True, widget=forms.TextInput(attrs={"autocomplete": "off"})
        )
    field.label = spec.label
    field.help_text = spec.help_text
    if spec.secret and keep_saved_secret:
        field.help_text = f"{spec.help_text} Leave blank to keep the saved value.".strip()
    return field


class CredentialFieldsMixin:
    """Adds the provider's declared credential fields as cred_<name> and reads them back."""

    def add_credential_fields(self, provider_class, *, keep_saved_secrets: bool = False) -> None:
        for spec in provider_class.credential_fields:
            self.fields[f"{CREDENTIAL_PREFIX}{spec.name}"] = _credential_form_field(
                spec, keep_saved_secret=keep_saved_secrets, provider_class=provider_class
            )

    @sensitive_variables()
    def credentials(self) -> dict[str, str]:
        """The values the trader typed (blank ones left out)."""
        return {
            name.removeprefix(CREDENTIAL_PREFIX): value
            for name, value in self.cleaned_data.items()
            if name.startswith(CREDENTIAL_PREFIX) and value
        }

    @sensitive_variables()
    def credential_values(self) -> dict[str, str]:
        """What the trader typed so far, valid or not: enough to test a login before saving."""
        typed = {
            name.removeprefix(CREDENTIAL_PREFIX): (self.data.get(self.add_prefix(name)) or "").strip()
            for name in self.fields
            if name.startswith(CREDENTIAL_PREFIX)
        }
        return {name: value for name, value in typed.items() if value}


class SyncSettingsForm(forms.Form):
    sync_enabled = forms.BooleanField(required=False, label="Auto-sync")
    sync_interval_min = interval_field()


class ConnectionForm(CredentialFieldsMixin, forms.Form):
    """Broker, label, interval and the provider's declared credential fields."""

    broker_type = forms.ChoiceField(label="Broker")
    label = label_field(help_text="A name you will recognise, e.g. 'Prop account'.")
    sync_interval_min = interval_field(
        initial=settings.SYNC_INTERVAL_DEFAULT_MIN,
        help_text=(f"How often your trades are fetched: {INTERVAL_RANGE} minutes."),
    )

    def __init__(self, *args, provider_class, **kwargs):
        super().__init__(*args, **kwargs)
        self.provider_class = provider_class
        self.fields["broker_type"].choices = provider_choices()
        self.fields["broker_type"].initial = provider_class.key
        if provider_class.environments:
            self.fields["environment"] = forms.ChoiceField(choices=provider_class.environments, label="Environment")
        self.add_credential_fields(provider_class)


class EditConnectionForm(CredentialFieldsMixin, forms.Form):
    """Label and credentials of an existing connection; blank secrets keep the saved ones."""

    label = label_field()

    @sensitive_variables()
    def __init__(self, *args, connection, provider_class, **kwargs):
        try:
            saved = connection.credentials
        except CredentialsUnreadable:
            # No key opens them any more: the trader types them all again, which is the fix.
            saved = {}
        secret_names = {spec.name for spec in provider_class.credential_fields if spec.secret}
        initial = {"label": connection.label} | {
            f"{CREDENTIAL_PREFIX}{name}": value for name, value in saved.items() if name not in secret_names
        }
        super().__init__(*args, initial=initial, **kwargs)
        self.saved_credentials = saved
        self.secret_names = secret_names
        self.add_credential_fields(provider_class, keep_saved_secrets=bool(saved))

    @sensitive_variables()
    def merged(self, typed: dict[str, str]) -> dict[str, str]:
        """The typed values, with every secret left blank taken from the saved credentials."""
        kept = {name: self.saved_credentials[name] for name in self.secret_names if name in self.saved_credentials}
        return kept | typed
