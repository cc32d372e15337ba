"""The stored broker session (token, expiry, refresh token, extra) is named for what it holds."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("brokers", "0006_snaptrade_user")]

    operations = [
        migrations.RenameField(
            model_name="brokerconnection", old_name="token_ciphertext", new_name="session_ciphertext"
        ),
    ]
