"""Error reports (the DEBUG page, mailed 500s) that never show a credential."""

from django.views.debug import SafeExceptionReporterFilter


class CredentialSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, active with DEBUG on as well.

    Django skips sensitive_variables / sensitive_post_parameters when DEBUG is on, and
    `make run` runs with DEBUG: its error page would show decrypted credentials.
    """

    def is_active(self, request):
        return True
