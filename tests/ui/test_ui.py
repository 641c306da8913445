"""The management web UI in headless Chromium: log in, look, and act as a person would.

Every wait is on a condition (WebDriverWait); nothing sleeps for a fixed time and
nothing asserts on timing. Each test leaves a screenshot in target/ui-screenshots/.
"""

import json
import threading

import pika
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import SHOTS, set_viewport

WAIT = 15


def wait(driver, cond, timeout=WAIT):
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(cond)


def text_in(driver, css, text, timeout=WAIT):
    """Waits until the element at `css` contains `text`; returns its text."""
    def cond(d):
        for el in d.find_elements(By.CSS_SELECTOR, css):
            if text in el.text:
                return el.text
        return False
    return wait(driver, cond, timeout)


def login(driver, broker, user="guest", password="guest", expect_ok=True):
    driver.get(broker.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(broker.url + "/")
    name = wait(driver, EC.visibility_of_element_located((By.ID, "username")))
    name.clear()
    name.send_keys(user)
    # Keyboard only: Tab to the password field, Enter submits the form.
    name.send_keys(Keys.TAB)
    active = driver.switch_to.active_element
    assert active.get_attribute("id") == "password"
    active.send_keys(password, Keys.ENTER)
    if expect_ok:
        wait(driver, EC.visibility_of_element_located((By.ID, "nav")))
        text_in(driver, "#who", user)


def go(driver, hash_):
    """In-page navigation (no reload), as a click on a link does."""
    driver.execute_script("location.hash = arguments[0]", hash_)


def accept_confirm(driver):
    alert = wait(driver, EC.alert_is_present())
    question = alert.text
    alert.accept()
    return question


def form(driver, label):
    return wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, f'form[aria-label="{label}"]')))


def click(driver, by, selector):
    """Clicks an element that a refresh may replace at any moment: found and clicked again
    until a click lands."""
    return wait(driver, lambda d: d.find_element(by, selector).click() or True)


def open_section(driver, title):
    summary = wait(driver, EC.element_to_be_clickable(
        (By.XPATH, f'//details/summary[normalize-space()="{title}"]')))
    details = summary.find_element(By.XPATH, "..")
    if details.get_attribute("open") is None:
        summary.click()
    return details


def fill(form_el, name, value):
    el = form_el.find_element(By.NAME, name)
    if el.tag_name == "select":
        Select(el).select_by_value(value)
    else:
        el.clear()
        el.send_keys(value)


def submit(driver, form_el, expect):
    """Submits, accepts the confirmation, waits for the result line to say `expect`."""
    form_el.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    accept_confirm(driver)
    return wait(driver, lambda d: form_el.find_element(By.CSS_SELECTOR, ".result").text
                if expect in form_el.find_element(By.CSS_SELECTOR, ".result").text else False)


def queue_row_cell(driver, name, field):
    """The text of a queue's Ready/Unacked/Total cell on the Queues page, or None."""
    return driver.execute_script(
        """const a = [...document.querySelectorAll('#page tbody a')].find(x => x.textContent === arguments[0]);
           if (!a) return null;
           const c = a.closest('tr').querySelector('[data-field="' + arguments[1] + '"]');
           return c ? c.textContent : null;""", name, field)


# ---------- login ----------

def test_wrong_password_is_refused_on_the_login_page(driver, broker):
    login(driver, broker, "guest", "not-the-password", expect_ok=False)
    msg = text_in(driver, "#login-status", "Login failed")
    assert msg == "Login failed"
    assert not driver.find_element(By.ID, "nav").is_displayed()
    # Still on the page, with no browser dialog in the way: the form is usable.
    assert driver.find_element(By.ID, "username").is_enabled()
    # The page's calls get their 401 without a WWW-Authenticate challenge, so no browser
    # would open its Basic-auth dialog over the form.
    answer = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
           fetch('api/whoami', {credentials: 'omit', headers: {
               Authorization: 'Basic ' + btoa('guest:wrong'), 'X-Requested-With': 'XMLHttpRequest'}})
             .then(r => done([r.status, r.headers.get('www-authenticate')]));""")
    assert answer == [401, None]


def test_user_without_management_tag_is_refused(driver, broker):
    status, _ = broker.api("PUT", "/users/ui-no-tags", {"password": "pw", "tags": ""})
    assert status in (201, 204)
    status, _ = broker.api("PUT", "/permissions/%2F/ui-no-tags", {"configure": ".*", "write": ".*", "read": ".*"})
    assert status in (201, 204)
    login(driver, broker, "ui-no-tags", "pw", expect_ok=False)
    msg = text_in(driver, "#login-status", "Not management user")
    assert "no management tag" in msg
    assert not driver.find_element(By.ID, "nav").is_displayed()


def test_tags_decide_what_is_visible(driver, broker):
    for user, tags in (("ui-viewer", "management"), ("ui-policy-maker", "policymaker")):
        broker.api("PUT", f"/users/{user}", {"password": "pw", "tags": tags})
        broker.api("PUT", f"/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    # management: the overview without node details, and no Admin tab.
    login(driver, broker, "ui-viewer", "pw")
    text_in(driver, "#alarms", "Node details need the monitoring tag.")
    assert not driver.find_element(By.ID, "nav-admin").is_displayed()
    # An administrator's page asked for directly answers with the API's reason.
    go(driver, "#/users")
    text_in(driver, "#page", "Not administrator user")
    # policymaker: the Admin tab leads to the policies.
    login(driver, broker, "ui-policy-maker", "pw")
    driver.find_element(By.LINK_TEXT, "Admin").click()
    text_in(driver, "h1", "Policies")
    assert [a.text for a in driver.find_elements(By.CSS_SELECTOR, ".subnav a")] == ["Policies"]


def test_log_in_and_out(driver, broker):
    login(driver, broker)
    driver.find_element(By.ID, "logout").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "login-form")))
    assert driver.execute_script("return sessionStorage.length") == 0


# ---------- overview ----------

def test_overview_shows_totals_node_and_live_charts(driver, broker):
    broker.api("PUT", "/queues/%2F/ui-demo", {"durable": True})
    stop = threading.Event()

    def traffic():
        # A publisher with confirms and an acking consumer, so every chart line moves.
        conn = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        ch = conn.channel()
        ch.confirm_delivery()
        cons = conn.channel()
        cons.basic_qos(prefetch_count=50)
        cons.basic_consume("ui-demo", lambda c, m, p, b: c.basic_ack(m.delivery_tag))
        n = 0
        while not stop.is_set():
            ch.basic_publish("", "ui-demo", b"tick %d" % n)
            n += 1
            if n % 20 == 0:
                conn.process_data_events(time_limit=0.05)
        conn.close()

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        login(driver, broker)
        go(driver, "#/")
        for label in ("Connections", "Channels", "Exchanges", "Queues", "Consumers"):
            tile = driver.find_element(By.XPATH, f'//a[@class="tile"][span[@class="l"]="{label}"]')
            wait(driver, lambda d: tile.find_element(By.CLASS_NAME, "n").text.replace(",", "").isdigit())
        wait(driver, lambda d: int(d.find_element(By.ID, "total-connections").text) >= 1)
        text_in(driver, ".kv", "Uptime")
        text_in(driver, "#alarms", "None")
        # The rate chart draws the traffic: the publish legend becomes non-zero.
        wait(driver, lambda d: d.find_element(
            By.CSS_SELECTOR, '[data-chart="Message rates"] [data-series="publish"]').text not in ("–", "0/s"))
        wait(driver, lambda d: len(d.find_element(
            By.CSS_SELECTOR, '[data-chart="Message rates"] polyline.s0').get_attribute("points").split()) >= 8)
        driver.save_screenshot(str(SHOTS / "overview.png"))
        # The queue's own page, under the same traffic.
        go(driver, "#/queues/%2F/ui-demo")
        text_in(driver, "h1", "Queue ui-demo")
        text_in(driver, "#page", "Consumers")
        wait(driver, lambda d: len(d.find_element(
            By.CSS_SELECTOR, '[data-chart="Message rates"] polyline.s0').get_attribute("points").split()) >= 8)
        driver.save_screenshot(str(SHOTS / "queue-live.png"))
    finally:
        stop.set()
        t.join(10)


# ---------- queues: declare, publish, watch, get, purge, delete ----------

Q = "ui-test-queue"


def test_declare_a_queue_through_the_ui(driver, broker):
    login(driver, broker)
    driver.find_element(By.LINK_TEXT, "Queues and Streams").click()
    wait(driver, EC.url_contains("#/queues"))
    open_section(driver, "Add a new queue")
    f = form(driver, "Add a new queue")
    fill(f, "name", Q)
    fill(f, "arguments", "x-max-length = 1000")
    assert f"Declare queue \"{Q}\"" in submit_and_question(driver, f, "declared")
    # The list refreshes by itself: the new queue appears without a reload.
    wait(driver, lambda d: queue_row_cell(d, Q, "total") == "0")
    status, q = broker.api("GET", "/queues/%2F/" + Q)
    assert status == 200 and q["durable"] and q["arguments"] == {"x-max-length": 1000}


def submit_and_question(driver, form_el, expect):
    form_el.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    question = accept_confirm(driver)
    wait(driver, lambda d: expect in form_el.find_element(By.CSS_SELECTOR, ".result").text)
    return question


def test_publish_through_the_ui_is_routed(driver, broker):
    login(driver, broker)
    go(driver, "#/exchanges/%2F/")
    text_in(driver, "h1", "(AMQP default)")
    open_section(driver, "Publish message")
    f = form(driver, "Publish message")
    fill(f, "routing_key", Q)
    fill(f, "headers", "x-origin = web-ui")
    fill(f, "properties", "content_type = text/plain")
    fill(f, "payload", "hello from the web UI")
    assert submit(driver, f, "routed") == "Message published and routed."
    # And one that goes nowhere says so.
    fill(f, "routing_key", "no-such-queue")
    assert "not routed" in submit(driver, f, "not routed")


def test_queue_count_changes_without_reloading(driver, broker):
    login(driver, broker)
    go(driver, "#/queues")
    wait(driver, lambda d: queue_row_cell(d, Q, "total") == "1")
    driver.execute_script("window.__sameDocument = true")
    # An application publishes; the page shows it by itself.
    for _ in range(2):
        status, r = broker.api("POST", "/exchanges/%2F/amq.default/publish",
                               {"routing_key": Q, "payload": "from an app", "payload_encoding": "string",
                                "properties": {}})
        assert status == 200 and r["routed"]
    wait(driver, lambda d: queue_row_cell(d, Q, "total") == "3")
    assert queue_row_cell(driver, Q, "ready") == "3"
    assert driver.execute_script("return window.__sameDocument === true")


def test_queue_page_gets_the_message(driver, broker):
    login(driver, broker)
    go(driver, "#/queues")
    click(driver, By.LINK_TEXT, Q)
    text_in(driver, "h1", "Queue " + Q)
    text_in(driver, "#queue-counts", "3 total: 3 ready, 0 unacked")
    f = form(driver, "Get messages")
    fill(f, "count", "1")
    f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # requeue: no confirmation
    body = text_in(driver, "#messages pre.payload", "hello from the web UI")
    assert body == "hello from the web UI"
    text_in(driver, "#messages", "x-origin: web-ui")
    text_in(driver, "#messages", "content_type: text/plain")
    text_in(driver, f".result", "2 left in the queue")
    wait(driver, lambda d: len(d.find_element(
        By.CSS_SELECTOR, '[data-chart="Queued messages"] polyline.s2').get_attribute("points").split()) >= 3)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SHOTS / "queue.png"))


def test_purge_the_queue(driver, broker):
    login(driver, broker)
    go(driver, "#/queues/%2F/" + Q)
    text_in(driver, "#queue-counts", "3 total")
    section = open_section(driver, "Purge")
    section.find_element(By.XPATH, './/button[normalize-space()="Purge Messages"]').click()
    assert "Purge queue" in accept_confirm(driver)
    text_in(driver, "details .result", "Queue purged.")
    text_in(driver, "#queue-counts", "0 total: 0 ready, 0 unacked")


def test_delete_the_queue(driver, broker):
    login(driver, broker)
    go(driver, "#/queues/%2F/" + Q)
    text_in(driver, "h1", Q)
    section = open_section(driver, "Delete")
    section.find_element(By.XPATH, './/button[normalize-space()="Delete Queue"]').click()
    assert "Delete queue" in accept_confirm(driver)
    wait(driver, EC.url_contains("#/queues"))
    text_in(driver, "#flash", f'Queue "{Q}" deleted.')
    wait(driver, lambda d: queue_row_cell(d, "ui-demo", "total") is not None)
    assert queue_row_cell(driver, Q, "total") is None
    assert broker.api("GET", "/queues/%2F/" + Q)[0] == 404


def test_errors_show_the_apis_reason(driver, broker):
    broker.api("PUT", "/queues/%2F/ui-durable", {"durable": True})
    login(driver, broker)
    go(driver, "#/queues")
    open_section(driver, "Add a new queue")
    f = form(driver, "Add a new queue")
    fill(f, "name", "ui-durable")
    fill(f, "durable", "false")  # redeclaring with other properties: refused
    text = submit(driver, f, "Error:")
    assert "inequivalent arg" in text or "PRECONDITION" in text, text


# ---------- filtering and pagination ----------

def test_filter_by_regex_and_page(driver, broker):
    for i in range(25):
        broker.api("PUT", f"/queues/%2F/page-q-{i:02d}", {"durable": False})
    login(driver, broker)
    go(driver, "#/queues")
    Select(driver.find_element(By.NAME, "page_size")).select_by_value("20")
    driver.find_element(By.CSS_SELECTOR, "input[type=search]").send_keys("^page-q-[0-9]+$")
    driver.find_element(By.XPATH, '//label[contains(., "Regex")]/input').click()
    text_in(driver, ".pager", "Page 1 of 2 · 25 of")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#page tbody tr")) == 20)
    driver.find_element(By.XPATH, '//button[contains(., "Next")]').click()
    text_in(driver, ".pager", "Page 2 of 2")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#page tbody tr")) == 5)
    assert queue_row_cell(driver, "page-q-24", "total") == "0"
    # Sorting by a column is the API's sort.
    driver.find_element(By.XPATH, '//th/button[starts-with(., "Name")]').click()
    text_in(driver, ".pager", "Page 2 of 2")
    wait(driver, lambda d: queue_row_cell(d, "page-q-04", "total") == "0")


def test_virtual_host_selector(driver, broker):
    assert broker.api("PUT", "/vhosts/ui-other", {})[0] in (201, 204)
    broker.api("PUT", "/permissions/ui-other/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    broker.api("PUT", "/queues/ui-other/only-here", {"durable": True})
    login(driver, broker)
    go(driver, "#/queues")
    wait(driver, lambda d: queue_row_cell(d, "ui-demo", "total") is not None)
    vhosts = Select(wait(driver, EC.presence_of_element_located((By.NAME, "vhost-filter"))))
    wait(driver, lambda d: "ui-other" in [o.get_attribute("value") for o in vhosts.options])
    vhosts.select_by_value("ui-other")
    text_in(driver, ".pager", "· 1 queues")
    assert queue_row_cell(driver, "only-here", "total") == "0"
    assert queue_row_cell(driver, "ui-demo", "total") is None
    # The choice holds on the Exchanges page too, as RabbitMQ's selector does.
    driver.find_element(By.LINK_TEXT, "Exchanges").click()
    text_in(driver, ".pager", "· 7 exchanges")
    Select(driver.find_element(By.NAME, "vhost-filter")).select_by_value("")
    wait(driver, lambda d: int(d.find_element(By.CSS_SELECTOR, ".pager span").text.split("· ")[1].split()[0]) > 7)


# ---------- exchanges and bindings ----------

def test_exchange_declare_bind_unbind_delete(driver, broker):
    broker.api("PUT", "/queues/%2F/ui-bound", {"durable": True})
    login(driver, broker)
    driver.find_element(By.LINK_TEXT, "Exchanges").click()
    open_section(driver, "Add a new exchange")
    f = form(driver, "Add a new exchange")
    fill(f, "name", "ui-topic")
    fill(f, "type", "topic")
    submit(driver, f, "declared")
    click(driver, By.LINK_TEXT, "ui-topic")
    text_in(driver, "h1", "Exchange ui-topic")
    open_section(driver, "Add binding from this exchange")
    b = form(driver, "Add binding")
    fill(b, "destination", "ui-bound")
    fill(b, "routing_key", "orders.#")
    submit(driver, b, "Bound.")
    wait(driver, EC.element_to_be_clickable((By.LINK_TEXT, "ui-bound")))
    text_in(driver, "#page", "orders.#")
    # Publish through this exchange: routed by the new binding.
    open_section(driver, "Publish message")
    p = form(driver, "Publish message")
    fill(p, "routing_key", "orders.eu")
    fill(p, "payload", "order 1")
    submit(driver, p, "routed")
    # The queue page shows the binding from the other side.
    go(driver, "#/queues/%2F/ui-bound")
    wait(driver, EC.presence_of_element_located((By.LINK_TEXT, "ui-topic")))
    go(driver, "#/exchanges/%2F/ui-topic")
    click(driver, By.XPATH, '//button[normalize-space()="Unbind"]')
    assert "Remove the binding" in accept_confirm(driver)
    text_in(driver, "#page", "No bindings.")
    open_section(driver, "Delete this exchange")
    driver.find_element(By.XPATH, '//button[normalize-space()="Delete this exchange"]').click()
    accept_confirm(driver)
    wait(driver, EC.url_contains("#/exchanges"))
    text_in(driver, "#flash", "deleted")
    assert broker.api("GET", "/exchanges/%2F/ui-topic")[0] == 404


# ---------- connections and channels ----------

def test_connections_and_channels_list_and_close_with_a_reason(driver, broker):
    params = pika.URLParameters(broker.amqp_url)
    params.client_properties = {"connection_name": "ui-test-connection"}
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    try:
        login(driver, broker)
        go(driver, "#/channels")
        text_in(driver, "#page tbody", "guest")
        wait(driver, lambda d: any(t.text == "C" for t in d.find_elements(By.CSS_SELECTOR, "#page tbody .tag")))
        driver.find_element(By.LINK_TEXT, "Connections").click()
        text_in(driver, "#page tbody", "ui-test-connection")
        text_in(driver, "#page tbody", "Pika Python Client Library")
        click(driver, By.XPATH, '//tr[td[normalize-space()="ui-test-connection"]]//a')
        text_in(driver, "h1", "Connection")
        text_in(driver, "#page pre", '"connection_name": "ui-test-connection"')
        f = form(driver, "Close this connection")
        fill(f, "reason", "closed from the web UI test")
        f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        assert "Close connection" in accept_confirm(driver)
        wait(driver, EC.url_contains("#/connections"))
        text_in(driver, "#flash", "closed")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            for _ in range(100):
                conn.process_data_events(time_limit=0.1)
        assert closed.value.reply_code == 320
        assert "closed from the web UI test" in closed.value.reply_text
    finally:
        if conn.is_open:
            conn.close()


def test_channel_page_shows_prefetch_mode_and_consumers(driver, broker):
    broker.api("PUT", "/queues/%2F/ui-channel-q", {"durable": False})
    params = pika.URLParameters(broker.amqp_url)
    params.client_properties = {"connection_name": "ui-channel-connection"}
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    ch.confirm_delivery()
    ch.basic_consume("ui-channel-q", lambda c, m, p, b: None, consumer_tag="ui-channel-consumer")
    try:
        status, conns = broker.api("GET", "/connections")
        assert status == 200
        cname = next(c["name"] for c in conns
                     if c["client_properties"].get("connection_name") == "ui-channel-connection")
        channel = f"{cname} (1)"
        login(driver, broker)
        driver.find_element(By.LINK_TEXT, "Channels").click()
        click(driver, By.LINK_TEXT, channel)
        text_in(driver, "h1", channel)
        assert driver.execute_script("return location.hash").startswith("#/channels/")
        assert text_in(driver, "#channel-prefetch", "7") == "7"
        assert text_in(driver, "#channel-mode", "confirm") == "confirm"
        text_in(driver, "#page tbody", "ui-channel-consumer")
        # The consumer's queue links to the queue's page; the connection to its own.
        queue = wait(driver, EC.presence_of_element_located((By.LINK_TEXT, "ui-channel-q")))
        assert queue.get_attribute("href").endswith("#/queues/%2F/ui-channel-q")
        conn_link = wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "table.kv a")))
        assert conn_link.text == cname
        wait(driver, lambda d: len(d.find_element(
            By.CSS_SELECTOR, '[data-chart="Message rates"] polyline.s0').get_attribute("points").split()) >= 3)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(SHOTS / "channel.png"))
        # The connection link keeps the keyboard focus through a refresh, and Enter follows
        # it: the connection's page lists the channel, linked back to the channel's page.
        driver.execute_script("arguments[0].focus()", driver.find_element(By.CSS_SELECTOR, "table.kv a"))
        before = driver.find_element(By.ID, "status").text
        wait(driver, lambda d: d.find_element(By.ID, "status").text != before)
        assert driver.switch_to.active_element.text == cname
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        text_in(driver, "h1", "Connection " + cname)
        click(driver, By.LINK_TEXT, channel)
        text_in(driver, "h1", channel)
        # The queue's page names the consumer's channel, linked to the channel's page.
        go(driver, "#/queues/%2F/ui-channel-q")
        text_in(driver, "#page", "ui-channel-consumer")
        click(driver, By.LINK_TEXT, channel)
        assert text_in(driver, "#channel-prefetch", "7") == "7"
        # A channel that does not exist says so (the API's 404), in words.
        go(driver, "#/channels/" + "no-such-connection%20(1)")
        text_in(driver, "#page [role=alert]", "was not found")
        assert "no-such-connection (1)" in driver.find_element(By.CSS_SELECTOR, "#page [role=alert]").text
    finally:
        if conn.is_open:
            conn.close()


# ---------- admin ----------

def test_admin_users_permissions_vhosts_limits_policies(driver, broker):
    login(driver, broker)
    driver.find_element(By.LINK_TEXT, "Admin").click()
    f = form(driver, "Add a user")
    fill(f, "username", "ui-alice")
    fill(f, "password", "s3cret")
    fill(f, "tags", "monitoring")
    submit(driver, f, "created")
    click(driver, By.LINK_TEXT, "ui-alice")
    text_in(driver, "h1", "User ui-alice")
    text_in(driver, "#page", "No permissions")
    open_section(driver, "Set permission")
    p = form(driver, "Set permission")
    fill(p, "read", "^ui-.*")
    submit(driver, p, "Permission set.")
    text_in(driver, "#page tbody", "^ui-.*")
    open_section(driver, "Set topic permission")
    t = form(driver, "Set topic permission")
    fill(t, "write", "^eu\\.")
    submit(driver, t, "Topic permission set.")
    text_in(driver, "#page", "^eu\\.")
    status, perm = broker.api("GET", "/permissions/%2F/ui-alice")
    assert status == 200 and perm["read"] == "^ui-.*"
    # The new user can log in with the password set in the UI.
    assert broker.api("GET", "/whoami", user=("ui-alice", "s3cret"))[1]["tags"] == ["monitoring"]
    # New tags without a new password keep the password.
    open_section(driver, "Update this user")
    u = form(driver, "Update this user")
    fill(u, "tags", "management, policymaker")
    submit(driver, u, "User updated.")
    text_in(driver, "#page .kv", "management, policymaker")
    assert broker.api("GET", "/whoami", user=("ui-alice", "s3cret"))[1]["tags"] == ["management", "policymaker"]

    driver.find_element(By.LINK_TEXT, "Virtual Hosts").click()
    v = form(driver, "Add a new virtual host")
    fill(v, "name", "ui-vhost")
    fill(v, "description", "made by the UI test")
    submit(driver, v, "created")
    click(driver, By.LINK_TEXT, "ui-vhost")
    open_section(driver, "Set limit")
    lf = form(driver, "Set limit")
    fill(lf, "name", "max-queues")
    fill(lf, "value", "10")
    submit(driver, lf, "Limit set.")
    text_in(driver, "#page", "max-queues")
    assert broker.api("GET", "/vhost-limits/ui-vhost")[1][0]["value"] == {"max-queues": 10}

    driver.find_element(By.LINK_TEXT, "Policies").click()
    pf = form(driver, "Add / update a policy")
    fill(pf, "name", "ui-policy")
    fill(pf, "pattern", "^ui-")
    fill(pf, "apply-to", "queues")
    fill(pf, "definition", "max-length = 500")
    submit(driver, pf, "set")
    text_in(driver, "#page tbody", "ui-policy")
    assert broker.api("GET", "/policies/%2F/ui-policy")[1]["definition"] == {"max-length": 500}


def test_import_and_export_definitions(driver, broker, downloads, tmp_path):
    defs = {
        "vhosts": [{"name": "/"}],
        "exchanges": [{"name": "ui-imported-x", "vhost": "/", "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": "ui-imported-q", "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {}}],
        "bindings": [{"source": "ui-imported-x", "vhost": "/", "destination": "ui-imported-q",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    }
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(defs))
    login(driver, broker)
    go(driver, "#/definitions")
    f = form(driver, "Import definitions")
    f.find_element(By.NAME, "file").send_keys(str(path))
    result = submit(driver, f, "imported")
    assert result == ("Definitions imported from definitions.json: 1 vhosts, 1 exchanges, 1 queues, 1 bindings.")
    go(driver, "#/queues")
    wait(driver, lambda d: queue_row_cell(d, "ui-imported-q", "total") == "0")
    go(driver, "#/exchanges/%2F/ui-imported-x")
    wait(driver, EC.presence_of_element_located((By.LINK_TEXT, "ui-imported-q")))
    # A broken file is refused with the API's reason, in words.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queues": [{"name": "x", "vhost": "no-such-vhost", "durable": True}]}))
    go(driver, "#/definitions")
    f = form(driver, "Import definitions")
    f.find_element(By.NAME, "file").send_keys(str(bad))
    assert "Error:" in submit(driver, f, "Error:")
    # Export downloads a file with what was imported.
    driver.find_element(By.ID, "export").click()
    text_in(driver, "#page", "Downloaded:")
    files = wait(driver, lambda d: [p for p in downloads.glob("warren-definitions-*.json")] or False)
    exported = wait(driver, lambda d: _json_or_false(files[0]))
    assert any(q["name"] == "ui-imported-q" for q in exported["queues"])


def _json_or_false(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return False


# ---------- layout ----------

def test_narrow_window_and_keyboard(driver, broker):
    login(driver, broker)
    set_viewport(driver, 420, 800)
    go(driver, "#/queues")
    wait(driver, lambda d: queue_row_cell(d, "ui-demo", "total") is not None)
    # Nothing but the tables (which scroll inside their box) is wider than the window.
    width = driver.execute_script("return document.documentElement.scrollWidth")
    inner = driver.execute_script("return window.innerWidth")
    assert width <= inner, (width, inner)
    # The navigation is reachable with the keyboard, with a visible skip link first.
    driver.get(broker.url + "/#/queues")
    driver.refresh()  # a fresh load: the focus starts at the top of the document
    wait(driver, lambda d: queue_row_cell(d, "ui-demo", "total") is not None)
    ActionChains(driver).send_keys(Keys.TAB).perform()
    skip = driver.switch_to.active_element
    assert skip.get_attribute("textContent") == "Skip to content"
    skip.send_keys(Keys.ENTER)
    assert driver.switch_to.active_element.get_attribute("id") == "main"
    assert driver.execute_script("return location.hash") == "#/queues"
    ActionChains(driver).send_keys(Keys.TAB).perform()
    assert driver.switch_to.active_element.tag_name in ("a", "button", "input", "select")
    driver.save_screenshot(str(SHOTS / "narrow-queues.png"))
