from django.urls import path

from journal import views

app_name = "journal"
urlpatterns = [
    path("", views.trade_list, name="trades"),
    path("profile/", views.profile, name="profile"),
]
