"""The three ways a trader connects a broker: typed credentials, OAuth2 sign-in, an aggregator's portal.

Each way is a module with the same three entry points — `add_page` (the add page for one
broker), `reconnect` (mend a connection whose access ended) and `finish` (back from the
broker's pages; typed credentials never leave) — and `way_for` is the one place that picks it.
`state` keeps the trips to a broker's pages; `views` holds the URLs that dispatch.
"""
