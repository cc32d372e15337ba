"""Template filters for the journal's exact amounts."""

from django import template

from journal.numbers import plain as plain_number

register = template.Library()
register.filter("plain", plain_number)
