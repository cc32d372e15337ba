"""URL map: trader pages, the admin, and the API."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="brokers:list"), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("brokers/", include("brokers.urls")),
    path("trades/", include("journal.urls")),
    path("sync/", include("sync.urls")),
    path("api/", include("config.api_urls")),
    path("admin/", admin.site.urls),
]
