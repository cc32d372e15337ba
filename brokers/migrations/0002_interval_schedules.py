"""Create the shared IntervalSchedules for 5..60 minutes once, so connections never race to make them."""
from django.db import migrations


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    existing = set(IntervalSchedule.objects.filter(period="minutes").values_list("every", flat=True))
    IntervalSchedule.objects.bulk_create(
        IntervalSchedule(every=n, period="minutes") for n in range(5, 61) if n not in existing
    )


class Migration(migrations.Migration):
    dependencies = [
        ("brokers", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, migrations.RunPython.noop)]
