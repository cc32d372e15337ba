"""Connect a broker with credentials the trader types (API keys, a login): the add and edit forms and their test."""

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from brokers import services, throttle
from brokers.decorators import trader_page
from brokers.forms import CREDENTIAL_PREFIX, ConnectionForm, EditConnectionForm
from brokers.models import BrokerConnection
from brokers.providers.errors import BrokerConfigurationError, BrokerError
from brokers.providers.registry import get_provider_class


def provider_class_or_404(broker_type: str):
    try:
        return get_provider_class(broker_type)
    except BrokerConfigurationError:
        raise Http404("Unknown broker") from None


def _copy_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        target = field if field in form.fields else (f"cred_{field}" if f"cred_{field}" in form.fields else None)
        for error in errors:
            form.add_error(target, error)


# The last "Test connection" of this session: a keyed digest of what was tested (never the
# credentials themselves) and whether the login worked, so saving can say whether it is verified.
LAST_TEST_SESSION_KEY = "brokers:last-connection-test"


def _credentials_digest(broker_type: str, environment: str, credentials: dict) -> str:
    tested = json.dumps([broker_type, environment, sorted(credentials.items())])
    return salted_hmac(LAST_TEST_SESSION_KEY, tested).hexdigest()


def _last_test_outcome(request, broker_type: str, environment: str, credentials: dict) -> bool | None:
    """True / False if exactly these credentials were tested in this session and worked / failed; None if not."""
    last = request.session.get(LAST_TEST_SESSION_KEY) or {}
    if last.get("digest") != _credentials_digest(broker_type, environment, credentials):
        return None
    return bool(last.get("ok"))


def _saved_message(label: str, tested: bool | None) -> str:
    if tested:
        return f"{label} is connected; the first sync has started."
    why = "the connection test failed" if tested is False else "the connection was not tested"
    return (
        f"Saved {label}, not verified yet: {why}. The first sync is trying these credentials now; "
        "the card shows what the broker answered."
    )


@sensitive_variables()
def _test_login(request, *, broker_type: str, credentials: dict, environment: str, form, template: str, context):
    """Log in with what the trader typed, without saving; htmx gets just the result, else the whole page."""
    wait = throttle.test_login_wait(request)
    if wait is not None:
        result = {"ok": False, "errors": [f"You tested logins several times just now. Try again in {wait} s."]}
        status = 429
    else:
        status = 200
        try:
            accounts = services.verify_credentials(
                broker_type=broker_type, credentials=credentials, environment=environment
            )
        except ValidationError as exc:
            result = {"ok": False, "errors": exc.messages}
        except BrokerError as exc:
            result = {"ok": False, "errors": [exc.message]}
        else:
            result = {"ok": True, "accounts": accounts}
        request.session[LAST_TEST_SESSION_KEY] = {
            "digest": _credentials_digest(broker_type, environment, credentials),
            "ok": result["ok"],
        }
    if request.htmx:
        return render(request, "brokers/_test_result.html", {"result": result}, status=status)
    return render(request, template, context | {"form": form, "result": result}, status=status)


# The credentials typed on these pages never reach an error report, even with DEBUG on
# (config/error_reports.py keeps Django's filter active then too).
@sensitive_post_parameters()
@sensitive_variables()
def add_page(request, provider_class):
    # The picker's link may choose a field already (ProjectX's firm); a secret never comes in an address.
    chosen = {
        f"{CREDENTIAL_PREFIX}{spec.name}": request.GET[spec.name]
        for spec in provider_class.credential_fields
        if not spec.secret and spec.name in request.GET
    }
    form = ConnectionForm(request.POST or None, provider_class=provider_class, initial=chosen)
    context = {"provider": provider_class}
    if request.method == "POST" and request.POST.get("action") == "test":
        return _test_login(
            request,
            broker_type=provider_class.key,
            credentials=form.credential_values(),
            environment=request.POST.get("environment", ""),
            form=form,
            template="brokers/connection_form.html",
            context=context,
        )
    if request.method == "POST" and form.is_valid():
        try:
            connection = services.connection_create(
                owner=request.user,
                broker_type=provider_class.key,
                label=form.cleaned_data["label"],
                environment=form.cleaned_data.get("environment", ""),
                credentials=form.credentials(),
                sync_interval_min=form.cleaned_data["sync_interval_min"],
            )
        except ValidationError as exc:
            _copy_errors(form, exc)
        else:
            tested = _last_test_outcome(
                request, provider_class.key, form.cleaned_data.get("environment", ""), form.credentials()
            )
            (messages.success if tested else messages.warning)(request, _saved_message(connection.label, tested))
            return redirect("brokers:list")
    return render(request, "brokers/connection_form.html", context | {"form": form})


def reconnect(request, connection: BrokerConnection):
    """Typed credentials are mended on their own form: saving working ones resumes sync."""
    messages.info(request, f"Save working credentials for {connection.label}: sync resumes at once.")
    return redirect("brokers:edit", pk=connection.pk)


@sensitive_post_parameters()
@sensitive_variables()
@trader_page
def edit(request, pk):
    connection = get_object_or_404(BrokerConnection, pk=pk, owner=request.user)
    provider_class = provider_class_or_404(connection.broker_type)
    form = EditConnectionForm(request.POST or None, connection=connection, provider_class=provider_class)
    context = {"provider": provider_class, "connection": connection}
    if request.method == "POST" and request.POST.get("action") == "test":
        return _test_login(
            request,
            broker_type=connection.broker_type,
            credentials=form.merged(form.credential_values()),
            environment=connection.environment,
            form=form,
            template="brokers/connection_edit.html",
            context=context,
        )
    if request.method == "POST" and form.is_valid():
        try:
            # A link made on the broker's pages has nothing typed to change here, only the label.
            typed = None if provider_class.signs_in_at_broker() else form.merged(form.credentials())
            services.connection_update(connection.pk, label=form.cleaned_data["label"], credentials=typed)
        except ValidationError as exc:
            _copy_errors(form, exc)
        else:
            messages.success(request, f"Saved {form.cleaned_data['label']}.")
            return redirect("brokers:list")
    return render(request, "brokers/connection_edit.html", context | {"form": form})


def finish(request, flow: dict):
    """Typed credentials never leave for the broker's pages, so no trip of theirs can come back."""
    messages.error(request, "This broker does not connect by signing in; fill in its form instead.")
    return redirect("brokers:list")
