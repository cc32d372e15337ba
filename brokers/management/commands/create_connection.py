"""Create a broker connection from the command line; secrets come from a prompt or the environment."""

import getpass
import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from brokers import services
from brokers.models import INTERVAL_RANGE
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class
from brokers.providers.text import printable

SECRET_ENV_PREFIX = "TJ_CRED_"


def secret_env_var(field_name: str) -> str:
    """The environment variable that may hold a secret credential field."""
    return f"{SECRET_ENV_PREFIX}{field_name.upper()}"


def validation_message(error: ValidationError) -> str:
    """One line naming each field and its rule, as the model and the services phrase them."""
    if hasattr(error, "error_dict"):
        text = " ".join(f"{field}: {message}" for field, messages in error.message_dict.items() for message in messages)
    else:
        text = " ".join(error.messages)
    return printable(text)


def parse_interval(value: str | None):
    """An int when the text is one; otherwise the text, so the service rejects it with its own rule."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


class Command(BaseCommand):
    help = (
        "Create a broker connection for a trader, with its schedule (auto-sync on unless --disabled; "
        "the first sync is queued at once). Non-secret credential fields are given as --field name=value. "
        f"Secret fields are never accepted on the command line, where other users and the shell history "
        f"can read them: set {SECRET_ENV_PREFIX}<FIELD NAME IN CAPITALS> (e.g. {secret_env_var('api_key')}) "
        "or type them at the prompt. See list_providers for each broker's fields."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", required=True, metavar="USERNAME", help="The trader who owns the connection.")
        parser.add_argument("--broker", required=True, metavar="KEY", help="The broker key (see list_providers).")
        parser.add_argument("--label", required=True, help="The name the trader sees.")
        parser.add_argument(
            "--environment", default="", help="The broker's environment, e.g. demo or live (default: its first one)."
        )
        parser.add_argument(
            "--interval",
            metavar="MINUTES",
            help=(f"Minutes between automatic syncs, {INTERVAL_RANGE} (default {settings.SYNC_INTERVAL_DEFAULT_MIN})."),
        )
        parser.add_argument("--disabled", action="store_true", help="Create it with automatic sync off.")
        parser.add_argument(
            "--field",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A non-secret credential field; repeat for each one.",
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Never prompt: secret fields must then come from the environment.",
        )

    def handle(self, *args, **options):
        # Whatever can be refused without the secrets is checked before the prompt,
        # so nobody types a secret for a command that then fails.
        try:
            provider_class = get_provider_class(options["broker"])
        except BrokerConfigurationError as exc:
            raise CommandError(str(exc)) from None
        credentials = self._given_fields(provider_class, options["field"])
        self._check_without_secrets(provider_class, credentials, options["environment"])
        extra = {}
        if options["interval"] is not None:
            extra["sync_interval_min"] = parse_interval(options["interval"])
        try:
            services.validate_fields(label=options["label"].strip(), **extra)
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None
        try:
            owner = get_user_model().objects.get_by_natural_key(options["owner"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['owner']!r}.") from None

        credentials.update(self._secrets(provider_class, options["interactive"]))
        try:
            connection = services.connection_create(
                owner=owner,
                broker_type=provider_class.key,
                label=options["label"],
                credentials=credentials,
                environment=options["environment"],
                sync_enabled=not options["disabled"],
                **extra,
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None

        schedule = (
            f"auto-sync every {connection.sync_interval_min} min, first sync queued"
            if connection.sync_enabled
            else "auto-sync off"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Created connection {connection.pk}: {printable(connection.label)} ({connection.broker_type}"
                f"{', ' + connection.environment if connection.environment else ''}) for {owner.get_username()}; "
                f"{schedule}."
            )
        )

    def _given_fields(self, provider_class, pairs: list[str]) -> dict[str, str]:
        secret_names = {f.name for f in provider_class.credential_fields if f.secret}
        values = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            name = name.strip()
            if name in secret_names:
                # Never echo the value: it is already exposed in argv, printing it would spread it further.
                raise CommandError(
                    f"{name} is a secret and is not accepted on the command line, where other users and the "
                    f"shell history can read it. Set {secret_env_var(name)} or type it at the prompt."
                )
            if not sep or not name:
                raise CommandError(f"--field takes NAME=VALUE, got {printable(pair)!r}.")
            values[name] = value
        return values

    def _check_without_secrets(self, provider_class, credentials: dict[str, str], environment: str) -> None:
        secret_names = {f.name for f in provider_class.credential_fields if f.secret}
        environment = environment or provider_class.default_environment()
        problems = {
            name: message
            for name, message in provider_class.validate_credentials(credentials, environment).items()
            if name not in secret_names
        }
        if problems:
            raise CommandError(printable(" ".join(f"{name}: {message}" for name, message in problems.items())))

    def _secrets(self, provider_class, interactive: bool) -> dict[str, str]:
        values = {}
        for field in provider_class.credential_fields:
            if not field.secret:
                continue
            value = os.environ.get(secret_env_var(field.name), "")
            if not value and interactive:
                value = getpass.getpass(f"{field.label}{'' if field.required else ' (optional)'}: ")
            if not value and field.required:
                raise CommandError(
                    f"{field.label} ({field.name}) is required: set {secret_env_var(field.name)} "
                    "or run without --no-input to type it at the prompt."
                )
            if value:
                values[field.name] = value
        return values
