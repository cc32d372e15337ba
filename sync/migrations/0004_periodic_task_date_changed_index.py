"""An index on django-celery-beat's PeriodicTask.date_changed, which sync.beat.scheduler reads every second.

django-celery-beat's own migrations have none; the table belongs to that app, so the index is
created by SQL here rather than by a model Meta it does not have.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0003_link_expiring_notice"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS periodic_task_date_changed "
            "ON django_celery_beat_periodictask (date_changed)",
            "DROP INDEX IF EXISTS periodic_task_date_changed",
        ),
    ]
