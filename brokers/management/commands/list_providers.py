"""List the registered brokers: key, name, environments and the credential fields each asks for."""

from django.core.management.base import BaseCommand

from brokers.management.commands.create_connection import secret_env_var
from brokers.providers.registry import provider_classes


class Command(BaseCommand):
    help = (
        "List every broker provider: its key (for create_connection --broker), name, environments "
        "(the first is the default) and credential fields, marking which are secret."
    )

    def handle(self, *args, **options):
        for key, provider_class in provider_classes().items():
            self.stdout.write(self.style.MIGRATE_HEADING(f"{key}: {provider_class.display_name}"))
            environments = ", ".join(f"{value} ({label})" for value, label in provider_class.environments)
            self.stdout.write(f"  environments: {environments or '-'}")
            self.stdout.write("  credential fields:")
            for field in provider_class.credential_fields:
                flags = ["required" if field.required else "optional"]
                if field.secret:
                    flags.append(f"secret: prompt or {secret_env_var(field.name)}")
                else:
                    flags.append(f"--field {field.name}=...")
                if field.choices:
                    flags.append("one of " + "|".join(value for value, _ in field.choices))
                self.stdout.write(f"    {field.name} — {field.label} [{'; '.join(flags)}]")
