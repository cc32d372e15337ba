"""Sync history and notices pages."""

from django.urls import path

from sync import views

app_name = "sync"
urlpatterns = [
    path("connections/<int:pk>/history/", views.sync_history, name="history"),
    path("notices/<int:pk>/dismiss/", views.notice_dismiss, name="dismiss_notice"),
]
