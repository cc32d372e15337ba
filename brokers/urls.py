from django.urls import path

from brokers import views
from brokers.connect import credentials, oauth, portal, suggest
from brokers.connect import views as connect

app_name = "brokers"
urlpatterns = [
    path("", views.connection_list, name="list"),
    path("add/", connect.add, name="add"),
    path("<int:pk>/status/", views.connection_status, name="status"),
    path("<int:pk>/edit/", credentials.edit, name="edit"),
    path("<int:pk>/settings/", views.connection_settings, name="settings"),
    path("<int:pk>/sync/", views.connection_sync_now, name="sync_now"),
    path("<int:pk>/delete/", views.connection_delete, name="delete"),
    path("<int:pk>/reconnect/", connect.reconnect, name="reconnect"),
    path("oauth/<str:broker_type>/connect/", oauth.connect, name="oauth_connect"),
    path("oauth/callback/", connect.callback, name="oauth_callback"),
    path("snaptrade/connect/", portal.connect, name="snaptrade_connect"),
    path("snaptrade/key/", portal.save_key, name="snaptrade_key"),
    path("<str:broker_type>/suggest/<str:field>/", suggest.suggest, name="suggest"),
]
