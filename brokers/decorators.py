"""The decorator every trader page wears: login required, and htmx polls that outlive a session reload."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django_htmx.http import HttpResponseClientRefresh


def trader_page(view):
    in_session = login_required(view)

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.htmx and not request.user.is_authenticated:
            # A poll after the session ended: reload the page (which goes to the login form)
            # instead of swapping the login form into a card.
            return HttpResponseClientRefresh()
        return in_session(request, *args, **kwargs)

    return wrapped
