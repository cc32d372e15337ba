"""The JSON API fuzzed from its own OpenAPI schema (schemathesis): no 500, no answer that breaks the schema.

Each operation gets schemathesis' coverage cases (boundary values, wrong types, missing and
unknown fields) and a fixed number of generated valid and invalid requests, so the whole
run stays within seconds.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from brokers import services

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]

SCHEMA = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
SCHEMA.app = get_wsgi_application()


@pytest.fixture
def token(trader):
    # Something to find: a connection (its first sync done) with accounts, trades and a log.
    services.connection_create(owner=trader, broker_type="demo", label="Fuzzed", credentials={"api_key": "k"})
    return services.api_token_create(owner=trader, name="test")[1]


@SCHEMA.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_generated_request_within_its_schema(case, token):
    response = case.call(headers={"Authorization": f"Token {token}"})
    case.validate_response(response, checks=CHECKS)
