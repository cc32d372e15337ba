"""Every change of auto-sync or interval — service, page form, admin — leaves exactly one PeriodicTask in step."""

import json

import pytest
from django.core.exceptions import ValidationError
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from brokers import periodic_tasks, services
from brokers.models import BrokerConnection

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection(make_connection):
    # Drop the on-commit sync so these tests look at schedules only.
    return make_connection(first_sync=False)


def only_task(connection) -> PeriodicTask:
    tasks = PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX)
    assert tasks.count() == 1
    task = tasks.get()
    assert task.name == f"broker-sync:{connection.pk}"
    return task


def assert_in_step(connection):
    connection.refresh_from_db()
    task = only_task(connection)
    assert task.task == "sync.tasks.sync_connection"
    assert json.loads(task.kwargs) == {"connection_id": connection.pk}
    assert task.args in ("[]", "")
    assert task.interval.every == connection.sync_interval_min
    assert task.interval.period == IntervalSchedule.MINUTES
    assert task.enabled == connection.sync_enabled
    assert task.expire_seconds == connection.sync_interval_min * 60
    return task


def test_create_makes_one_enabled_task_on_the_default_interval(connection):
    task = assert_in_step(connection)
    assert task.enabled and task.interval.every == 15


def test_create_queues_a_first_sync_on_commit(trader, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"})
    assert len(callbacks) == 1


def test_service_changes_keep_the_task_in_step(connection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.update_sync_interval(connection.pk, 30)
        assert_in_step(connection)
        services.update_sync_enabled(connection.pk, False)
        assert not assert_in_step(connection).enabled
        assert callbacks == []
        services.update_sync_enabled(connection.pk, True)
        assert assert_in_step(connection).enabled
    # Switching sync back on starts a sync right away rather than waiting a whole interval.
    assert len(callbacks) == 1
    assert IntervalSchedule.objects.filter(every=30, period="minutes").count() == 1


@pytest.mark.parametrize("bad", [4, 61, 0, -5, 15.5, "15", None, True])
def test_bad_interval_is_refused_naming_the_range_and_changes_nothing(connection, bad):
    before = assert_in_step(connection)
    with pytest.raises(ValidationError) as info:
        services.update_sync_interval(connection.pk, bad)
    assert "sync_interval_min" in info.value.message_dict
    assert "from 5 to 60" in info.value.message_dict["sync_interval_min"][0]
    after = assert_in_step(connection)
    assert after.interval_id == before.interval_id and connection.sync_interval_min == 15


def test_bad_enabled_value_is_refused(connection):
    with pytest.raises(ValidationError) as info:
        services.update_sync_enabled(connection.pk, "yes")
    assert "sync_enabled" in info.value.message_dict
    assert_in_step(connection)


def test_unknown_broker_and_missing_credential_are_refused_and_nothing_is_saved(trader):
    with pytest.raises(ValidationError) as info:
        services.connection_create(owner=trader, broker_type="nope", label="X", credentials={})
    assert "known types are listed by" in info.value.message_dict["broker_type"][0]
    assert "nope" in info.value.message_dict["broker_type"][0]
    with pytest.raises(ValidationError) as info:
        services.connection_create(owner=trader, broker_type="demo", label="X", credentials={"api_key": ""})
    assert info.value.message_dict["api_key"] == ["Demo API key is required."]
    with pytest.raises(ValidationError) as info:
        services.connection_create(
            owner=trader, broker_type="demo", label="X", credentials={"api_key": "k"}, sync_interval_min=90
        )
    assert "sync_interval_min" in info.value.message_dict
    assert not BrokerConnection.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX).exists()


def test_delete_removes_the_task(connection):
    services.connection_delete(connection.pk)
    assert not PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX).exists()
    assert not BrokerConnection.objects.exists()


def test_page_form_changes_go_through_the_service(client, trader, connection):
    client.force_login(trader)
    response = client.post(f"/brokers/{connection.pk}/settings/", {"sync_interval_min": "45"})
    assert response.status_code == 302
    task = assert_in_step(connection)
    assert task.interval.every == 45 and not task.enabled  # the unticked box switched auto-sync off

    response = client.post(
        f"/brokers/{connection.pk}/settings/", {"sync_enabled": "on", "sync_interval_min": "3"}, follow=True
    )
    assert "Sync interval must be a whole number of minutes from 5 to 60." in response.content.decode()
    task = assert_in_step(connection)
    assert task.interval.every == 45 and not task.enabled


def test_admin_edits_go_through_the_service(admin_client, connection):
    url = f"/admin/brokers/brokerconnection/{connection.pk}/change/"
    form = {"label": "Renamed", "sync_interval_min": "20", "new_credentials": ""}
    response = admin_client.post(url, form)
    assert response.status_code == 302
    task = assert_in_step(connection)
    assert task.interval.every == 20 and not task.enabled
    assert connection.label == "Renamed"

    response = admin_client.post(url, {**form, "sync_enabled": "on", "sync_interval_min": "61"})
    assert response.status_code == 200
    assert "from 5 to 60" in response.content.decode()
    assert assert_in_step(connection).interval.every == 20


def test_admin_bulk_actions_keep_tasks_in_step(admin_client, connection):
    admin_client.post(
        "/admin/brokers/brokerconnection/", {"action": "disable_auto_sync", "_selected_action": [connection.pk]}
    )
    assert not assert_in_step(connection).enabled
    admin_client.post(
        "/admin/brokers/brokerconnection/", {"action": "enable_auto_sync", "_selected_action": [connection.pk]}
    )
    assert assert_in_step(connection).enabled


def test_admin_delete_removes_the_task(admin_client, connection):
    admin_client.post(f"/admin/brokers/brokerconnection/{connection.pk}/delete/", {"post": "yes"})
    assert not PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX).exists()
