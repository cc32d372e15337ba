"""The Content Security Policy in a real Chromium: every page, htmx and Swagger UI work under it
and the browser reports no violation."""

import pytest
from playwright.sync_api import expect

from brokers import services

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "csp-password-1"
# Collected in the page itself: Chromium fires this event for every blocked script, style,
# image or request, whatever the console shows.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} in ${where}`);
});
"""


@pytest.fixture
def watched(page):
    page.add_init_script(RECORD_VIOLATIONS)
    return page


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


def test_the_pages_and_htmx_work_under_the_policy(watched, live_server, log_in, django_user_model):
    page = watched
    trader = django_user_model.objects.create_user(username="dave", password=PASSWORD)
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Watched", credentials={"api_key": "k"}, sync_enabled=False
    )
    log_in(page, "dave", PASSWORD)
    assert violations(page) == []
    for path in ["/brokers/", "/trades/", f"/sync/connections/{connection.pk}/history/", "/trades/profile/"]:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert "script-src 'self' 'nonce-" in response.headers["content-security-policy"], path
        assert violations(page) == [], path

    # htmx under the policy: Test connection swaps its result into the page.
    page.goto(f"{live_server.url}/brokers/add/?broker=demo")
    page.get_by_label("Demo API key").fill("k")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#test-result .test-result")).to_contain_text("The broker accepted the login.")
    assert violations(page) == []


def test_swagger_ui_renders_the_api_under_the_policy(watched, live_server, log_in, django_user_model):
    page = watched
    django_user_model.objects.create_user(username="erin", password=PASSWORD)
    log_in(page, "erin", PASSWORD)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_text("/api/connections/").first).to_be_visible()
    assert violations(page) == []


def test_the_admin_works_under_the_policy(watched, live_server, django_user_model):
    page = watched
    django_user_model.objects.create_superuser(username="root", password=PASSWORD, email="root@example.com")
    page.goto(f"{live_server.url}/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/admin/brokers/brokerconnection/add/")
    expect(page.get_by_label("Label")).to_be_visible()
    assert violations(page) == []
