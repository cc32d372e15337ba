"""URL map: trader pages, the admin, the API, and the operator's probes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from sync.health import readiness_view
from sync.metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="brokers:list"), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("brokers/", include("brokers.urls")),
    path("trades/", include("journal.urls")),
    path("sync/", include("sync.urls")),
    path("api/", include("config.api_urls")),
    path("admin/", admin.site.urls),
    # /healthz is answered by sync.health.liveness_middleware, ahead of every other middleware.
    path("readyz", readiness_view, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
