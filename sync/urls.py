"""Sync history, undoing a run, file import and notices pages."""

from django.urls import path

from sync import views

app_name = "sync"
urlpatterns = [
    path("connections/<int:pk>/history/", views.sync_history, name="history"),
    path("import/", views.file_import_page, name="file_import"),
    path("import/template.csv", views.file_template, name="file_template"),
    path("accounts/<int:pk>/import/", views.file_import_page, name="file_import_account"),
    path("runs/<int:pk>/undo/", views.run_undo, name="undo"),
    path("notices/<int:pk>/dismiss/", views.notice_dismiss, name="dismiss_notice"),
]
