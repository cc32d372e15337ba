"""Sync history and notices pages."""

app_name = "sync"
urlpatterns = []
