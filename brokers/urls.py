from django.urls import path

from brokers import oauth_views, snaptrade_views, suggest_views, views

app_name = "brokers"
urlpatterns = [
    path("", views.connection_list, name="list"),
    path("add/", views.connection_add, name="add"),
    path("<int:pk>/status/", views.connection_status, name="status"),
    path("<int:pk>/edit/", views.connection_edit, name="edit"),
    path("<int:pk>/settings/", views.connection_settings, name="settings"),
    path("<int:pk>/sync/", views.connection_sync_now, name="sync_now"),
    path("<int:pk>/delete/", views.connection_delete, name="delete"),
    path("<int:pk>/reconnect/", oauth_views.reconnect, name="reconnect"),
    path("oauth/<str:broker_type>/connect/", oauth_views.connect, name="oauth_connect"),
    path("oauth/callback/", oauth_views.callback, name="oauth_callback"),
    path("snaptrade/connect/", snaptrade_views.connect, name="snaptrade_connect"),
    path("snaptrade/key/", snaptrade_views.save_key, name="snaptrade_key"),
    path("<str:broker_type>/suggest/<str:field>/", suggest_views.suggest, name="suggest"),
]
