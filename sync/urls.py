"""Sync history, undoing a run, and notices pages."""

from django.urls import path

from sync import views

app_name = "sync"
urlpatterns = [
    path("connections/<int:pk>/history/", views.sync_history, name="history"),
    path("runs/<int:pk>/undo/", views.run_undo, name="undo"),
    path("notices/<int:pk>/dismiss/", views.notice_dismiss, name="dismiss_notice"),
]
