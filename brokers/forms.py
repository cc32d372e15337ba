"""Forms for the trader's pages; they validate and hand over to the services."""
from django import forms
from django.conf import settings

from brokers.providers.registry import provider_choices

INTERVAL_CHOICES = [(n, f"every {n} min") for n in (5, 10, 15, 20, 30, 45, 60)]


class SyncSettingsForm(forms.Form):
    sync_enabled = forms.BooleanField(required=False, label="Auto-sync")
    sync_interval_min = forms.IntegerField(
        label="Sync interval (minutes)",
        min_value=settings.SYNC_INTERVAL_MIN,
        max_value=settings.SYNC_INTERVAL_MAX,
        error_messages={
            "min_value": f"Sync interval must be from {settings.SYNC_INTERVAL_MIN} to {settings.SYNC_INTERVAL_MAX} minutes.",
            "max_value": f"Sync interval must be from {settings.SYNC_INTERVAL_MIN} to {settings.SYNC_INTERVAL_MAX} minutes.",
            "invalid": "Sync interval must be a whole number of minutes.",
        },
    )


class ConnectionForm(forms.Form):
    """Broker, label and the provider's declared credential fields (added per broker)."""

    broker_type = forms.ChoiceField(label="Broker")
    label = forms.CharField(max_length=100, help_text="A name you will recognise, e.g. 'Prop account'.")
    sync_interval_min = forms.IntegerField(
        label="Sync interval (minutes)",
        initial=settings.SYNC_INTERVAL_DEFAULT_MIN,
        min_value=settings.SYNC_INTERVAL_MIN,
        max_value=settings.SYNC_INTERVAL_MAX,
    )

    def __init__(self, *args, provider_class=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["broker_type"].choices = provider_choices()
        self.provider_class = provider_class
        if provider_class is None:
            return
        self.fields["broker_type"].initial = provider_class.key
        if provider_class.environments:
            self.fields["environment"] = forms.ChoiceField(choices=provider_class.environments, label="Environment")
        for f in provider_class.credential_fields:
            if f.choices:
                field = forms.ChoiceField(choices=f.choices, required=f.required)
            else:
                widget = forms.PasswordInput(render_value=False) if f.secret else forms.TextInput
                field = forms.CharField(required=f.required, widget=widget, strip=True)
            field.label, field.help_text = f.label, f.help_text
            self.fields[f"cred_{f.name}"] = field

    def credentials(self) -> dict[str, str]:
        return {
            name.removeprefix("cred_"): value
            for name, value in self.cleaned_data.items()
            if name.startswith("cred_") and value
        }
