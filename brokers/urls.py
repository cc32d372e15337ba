from django.urls import path

from brokers import views

app_name = "brokers"
urlpatterns = [
    path("", views.connection_list, name="list"),
    path("add/", views.connection_add, name="add"),
    path("<int:pk>/status/", views.connection_status, name="status"),
    path("<int:pk>/edit/", views.connection_edit, name="edit"),
    path("<int:pk>/settings/", views.connection_settings, name="settings"),
    path("<int:pk>/sync/", views.connection_sync_now, name="sync_now"),
    path("<int:pk>/delete/", views.connection_delete, name="delete"),
]
