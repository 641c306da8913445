//! The management HTTP API (#11): RabbitMQ's paths, status codes, JSON fields and
//! error bodies, and counts that are exact at the time of the request.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util::{declare_queue, ss, TestBroker};

struct Api {
    http: warren_management::Running,
    client: reqwest::Client,
}

impl Api {
    async fn start() -> (Api, TestBroker) {
        let broker = TestBroker::start().await;
        let http =
            warren_management::start(broker.running().admin(), "127.0.0.1:0".parse().unwrap())
                .await
                .expect("management API starts");
        let api = Api {
            http,
            client: reqwest::Client::new(),
        };
        (api, broker)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http.local_addr(), path)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        user: (&str, &str),
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .basic_auth(user.0, Some(user.1));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None, ("guest", "guest"))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body), ("guest", "guest"))
            .await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None, ("guest", "guest"))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body), ("guest", "guest"))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_at_the_time_of_the_request() {
    let (api, broker) = Api::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "exact").await;
    const N: u64 = 50;
    publish_confirmed(&ch, "exact", N as usize).await;
    // No sleep: the count is read from the queue.
    let (status, q) = api.get("/api/queues/%2F/exact").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["messages"], N);
    assert_eq!(q["messages_ready"], N);
    assert_eq!(q["message_stats"]["publish"], N);
    const K: u64 = 7;
    let mut tags = Vec::new();
    for _ in 0..K {
        let m = ch
            .basic_get(ss("exact"), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .unwrap();
        tags.push(m.delivery.delivery_tag);
    }
    let (_, q) = api.get("/api/queues/%2F/exact").await;
    assert_eq!(q["messages"], N);
    assert_eq!(q["messages_unacknowledged"], K);
    assert_eq!(q["messages_ready"], N - K);
    // Bodies are one byte each.
    assert_eq!(q["message_bytes_unacknowledged"], K);
    assert_eq!(q["message_bytes_ready"], N - K);
    assert_eq!(q["message_bytes"], N);
    for t in tags {
        ch.basic_ack(t, BasicAckOptions::default()).await.unwrap();
    }
    // A round trip on the channel makes sure the acks were processed.
    declare_queue(&ch, "exact").await;
    let (_, q) = api.get("/api/queues/%2F/exact").await;
    assert_eq!(q["messages"], N - K);
    assert_eq!(q["messages_unacknowledged"], 0);
    assert_eq!(q["message_bytes_unacknowledged"], 0);
    assert_eq!(q["message_bytes"], N - K);
    assert_eq!(q["message_stats"]["ack"], K);
    assert_eq!(q["message_stats"]["deliver_get"], K);
    for field in [
        "publish_details",
        "deliver_get_details",
        "ack_details",
        "redeliver_details",
    ] {
        assert!(q["message_stats"][field]["rate"].is_number(), "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_rabbitmqs_statuses_and_bodies() {
    let (api, broker) = Api::start().await;
    let (status, body) = api
        .call(
            reqwest::Method::GET,
            "/api/overview",
            None,
            ("guest", "wrong"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"error": "not_authorized", "reason": "Login failed"})
    );
    let resp = api
        .client
        .get(api.url("/api/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    broker
        .running()
        .admin()
        .access()
        .add_user("plain", Some("plain"), &[])
        .unwrap();
    let (status, body) = api
        .call(
            reqwest::Method::GET,
            "/api/overview",
            None,
            ("plain", "plain"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"error": "not_authorised", "reason": "Not management user"})
    );
    let (status, body) = api.get("/api/queues/%2F/nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    let resp = api
        .client
        .put(api.url("/api/queues/%2F/x"))
        .basic_auth("guest", Some("guest"))
        .body("{bad")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "bad_request", "reason": "not_json"})
    );
    // A monitoring user may read but not manage users.
    broker
        .running()
        .admin()
        .access()
        .add_user("mon", Some("mon"), &["monitoring"])
        .unwrap();
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/overview", None, ("mon", "mon"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/users", None, ("mon", "mon"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_bind_publish_get_and_delete_over_http() {
    let (api, _broker) = Api::start().await;
    // Old rabbitmqadmin sends booleans as strings.
    assert_eq!(
        api.put(
            "/api/queues/%2F/hq",
            json!({"durable": "true", "auto_delete": "false", "arguments": {"x-max-length": 10}})
        )
        .await
        .0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.put(
            "/api/queues/%2F/hq",
            json!({"durable": true, "arguments": {"x-max-length": 10}})
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = api
        .put("/api/queues/%2F/hq", json!({"durable": false}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("inequivalent arg 'durable'"),
        "{body}"
    );
    assert_eq!(
        api.put("/api/exchanges/%2F/hx", json!({"type": "topic"}))
            .await
            .0,
        StatusCode::CREATED
    );
    let resp = api
        .client
        .post(api.url("/api/bindings/%2F/e/hx/q/hq"))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"routing_key": "a.#", "arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // RabbitMQ: `Location: DESTINATION/PROPERTIES_KEY` (Terraform takes the last segment).
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "hq/a.%23");
    let location = location.rsplit('/').next().unwrap().to_string();
    let (_, bindings) = api.get("/api/bindings/%2F/e/hx/q/hq").await;
    assert_eq!(bindings[0]["properties_key"], location.as_str());
    assert_eq!(bindings[0]["destination_type"], "queue");
    let (status, routed) = api
        .post("/api/exchanges/%2F/hx/publish", json!({"routing_key": "a.b", "payload": "hello", "payload_encoding": "string", "properties": {"delivery_mode": 2, "headers": {"h": 1}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(routed, json!({"routed": true}));
    let (_, routed) = api
        .post("/api/exchanges/%2F/hx/publish", json!({"routing_key": "zzz", "payload": "x", "payload_encoding": "string", "properties": {}}))
        .await;
    assert_eq!(routed, json!({"routed": false}));
    let (_, got) = api
        .post(
            "/api/queues/%2F/hq/get",
            json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}),
        )
        .await;
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["properties"]["headers"]["h"], 1);
    assert_eq!(got[0]["routing_key"], "a.b");
    // Requeued: still there, now redelivered.
    let (_, got) = api
        .post(
            "/api/queues/%2F/hq/get",
            json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"}),
        )
        .await;
    assert_eq!(got[0]["redelivered"], true);
    assert_eq!(got[0]["payload_encoding"], "base64");
    let (_, q) = api.get("/api/queues/%2F/hq").await;
    assert_eq!(q["messages"], 0);
    assert_eq!(
        api.delete(&format!("/api/bindings/%2F/e/hx/q/hq/{location}"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/api/queues/%2F/hq").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/api/queues/%2F/hq").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/api/exchanges/%2F/hx").await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_like_rabbitmq() {
    let (api, _broker) = Api::start().await;
    for i in 0..12 {
        api.put(&format!("/api/queues/%2F/page.{i:02}"), json!({}))
            .await;
    }
    let (_, page) = api
        .get("/api/queues/%2F?page=2&page_size=5&name=page.&use_regex=false&pagination=true&sort=name")
        .await;
    assert_eq!(page["page"], 2);
    assert_eq!(page["page_count"], 3);
    assert_eq!(page["filtered_count"], 12);
    assert_eq!(page["item_count"], 5);
    assert_eq!(page["items"][0]["name"], "page.05");
    let (_, cols) = api.get("/api/queues?columns=name,messages").await;
    assert_eq!(cols[0].as_object().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_over_http() {
    let (api, broker) = Api::start().await;
    assert_eq!(
        api.put("/api/vhosts/web", json!({"description": "d"}))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.put(
            "/api/users/webuser",
            json!({"password": "pw", "tags": "management,monitoring"})
        )
        .await
        .0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.put(
            "/api/permissions/web/webuser",
            json!({"configure": ".*", "write": ".*", "read": ".*"})
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (_, u) = api.get("/api/users/webuser").await;
    assert_eq!(u["tags"], json!(["management", "monitoring"]));
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let (_, whoami) = api
        .call(reqwest::Method::GET, "/api/whoami", None, ("webuser", "pw"))
        .await;
    assert_eq!(whoami["name"], "webuser");
    // The new user connects over AMQP with the password set over HTTP.
    let uri = format!("amqp://webuser:pw@{}/web", broker.addr());
    let conn = crate::util::connect_uri(&uri).await.unwrap();
    let (_, conns) = api.get("/api/connections").await;
    let mine = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user"] == "webuser")
        .expect("listed")
        .clone();
    assert_eq!(mine["vhost"], "web");
    let name = mine["name"].as_str().unwrap().to_string();
    // DELETE closes it with 320 and the X-Reason text.
    let resp = api
        .client
        .delete(api.url(&format!(
            "/api/connections/{}",
            name.replace(' ', "%20").replace('>', "%3E")
        )))
        .basic_auth("guest", Some("guest"))
        .header("X-Reason", "test reconnect")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    crate::util::eventually(
        std::time::Duration::from_secs(10),
        "connection closed",
        || !conn.status().connected(),
    )
    .await;
    let (_, defs) = api.get("/api/definitions").await;
    assert!(defs["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "webuser"));
    assert!(defs["vhosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "web"));
    assert_eq!(
        api.delete("/api/vhosts/web").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get("/api/vhosts/web").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.delete("/api/users/webuser").await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliveness_and_health_checks() {
    let (api, _broker) = Api::start().await;
    let resp = api
        .client
        .get(api.url("/api/aliveness-test/%2F"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Spring's BrokerRunningSupport compares the body exactly.
    assert_eq!(resp.text().await.unwrap(), r#"{"status":"ok"}"#);
    assert_eq!(
        api.get("/api/health/checks/alarms").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (status, body) = api.get("/api/health/checks/port-listener/1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "failed");
    let (_, overview) = api.get("/api/overview").await;
    for key in [
        "rabbitmq_version",
        "management_version",
        "product_name",
        "cluster_name",
        "node",
        "statistics_db_node",
        "object_totals",
        "queue_totals",
        "message_stats",
        "listeners",
        "exchange_types",
        "contexts",
    ] {
        assert!(overview.get(key).is_some(), "overview lacks {key}");
    }
    assert!(overview["exchange_types"].as_array().unwrap().len() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_have_rabbitmqs_names() {
    let broker = TestBroker::start().await;
    let metrics =
        warren_management::metrics::start(broker.running().admin(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "metered").await;
    publish_confirmed(&ch, "metered", 3).await;
    let get = |path: &'static str| {
        let url = format!("http://{}{}", metrics.local_addr(), path);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let text = get("/metrics").await;
    // Every sample line is `name{labels} value`; metadata lines start with `#`.
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("numeric value");
        let name = series.split('{').next().unwrap().to_string();
        samples.insert(name.clone(), value);
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
        }
    }
    // RabbitMQ's default: the Prometheus text format 0.0.4, where a counter's TYPE line
    // names its `_total` series; OpenMetrics (ending in `# EOF`) on request.
    assert!(
        text.contains("# TYPE rabbitmq_connections_opened_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    let om = reqwest::Client::new()
        .get(format!("http://{}/metrics", metrics.local_addr()))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = om.text().await.unwrap();
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    assert!(om.contains("# TYPE rabbitmq_connections_opened counter"));
    for name in [
        "rabbitmq_identity_info",
        "rabbitmq_build_info",
        "rabbitmq_connections",
        "rabbitmq_queues",
        "rabbitmq_consumers",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_messages_published_total",
        "rabbitmq_process_resident_memory_bytes",
        "rabbitmq_process_open_fds",
        "rabbitmq_process_max_fds",
        "rabbitmq_resident_memory_limit_bytes",
        "rabbitmq_disk_space_available_bytes",
        "rabbitmq_alarms_memory_used_watermark",
    ] {
        assert!(samples.contains_key(name), "{name} missing from:\n{text}");
    }
    assert_eq!(samples["rabbitmq_queue_messages_ready"], 3.0);
    assert_eq!(samples["rabbitmq_connections"], 1.0);
    // Channel families, summed over the open channels, and churn counters.
    assert_eq!(samples["rabbitmq_channels"], 1.0);
    assert_eq!(samples["rabbitmq_channel_messages_published_total"], 3.0);
    assert_eq!(samples["rabbitmq_channel_messages_confirmed_total"], 3.0);
    assert_eq!(samples["rabbitmq_channel_messages_unconfirmed"], 0.0);
    assert_eq!(samples["rabbitmq_connections_opened_total"], 1.0);
    assert_eq!(samples["rabbitmq_connections_closed_total"], 0.0);
    assert_eq!(samples["rabbitmq_channels_opened_total"], 1.0);
    assert_eq!(samples["rabbitmq_queues_declared_total"], 1.0);
    assert_eq!(samples["rabbitmq_queues_created_total"], 1.0);
    assert_eq!(samples["rabbitmq_queues_deleted_total"], 0.0);
    for name in [
        "rabbitmq_channel_messages_delivered_total",
        "rabbitmq_channel_messages_delivered_ack_total",
        "rabbitmq_channel_messages_acked_total",
        "rabbitmq_channel_messages_redelivered_total",
        "rabbitmq_channel_messages_unroutable_returned_total",
        "rabbitmq_channel_messages_unroutable_dropped_total",
        "rabbitmq_channel_get_total",
        "rabbitmq_channel_get_ack_total",
        "rabbitmq_channel_get_empty_total",
        "rabbitmq_channel_messages_unacked",
        "rabbitmq_channel_consumers",
        "rabbitmq_channels_closed_total",
    ] {
        assert!(samples.contains_key(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains("rabbitmq_identity_info{rabbitmq_node=\""),
        "{text}"
    );
    let per_object = get("/metrics/per-object").await;
    assert!(
        per_object.contains("rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"metered\"} 3"),
        "{per_object}"
    );
}

/// Publishes `n` messages to `queue` with confirms.
async fn publish_confirmed(ch: &lapin::Channel, queue: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..n {
        publish_one(ch, queue).await;
    }
}

/// Publishes one message to `queue` through the default exchange and waits for its
/// confirm (the channel is in confirm mode); a missing queue means it is dropped.
async fn publish_one(ch: &lapin::Channel, queue: &str) {
    ch.basic_publish(
        ss(""),
        ss(queue),
        BasicPublishOptions::default(),
        b"m",
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_set_at_run_time_apply_to_existing_queues_at_once() {
    let (api, broker) = Api::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "pq.one").await;
    declare_queue(&ch, "other").await;
    publish_confirmed(&ch, "pq.one", 10).await;
    publish_confirmed(&ch, "other", 10).await;
    let (s, _) = api
        .put(
            "/api/policies/%2F/cap",
            json!({"pattern": "^pq\\.", "definition": {"max-length": 3, "ha-mode": "all"},
                   "apply-to": "queues", "priority": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Applied before the PUT returned: drop-head kept the newest 3.
    let (_, q) = api.get("/api/queues/%2F/pq.one").await;
    assert_eq!(q["messages"], 3);
    assert_eq!(q["policy"], "cap");
    assert_eq!(
        q["effective_policy_definition"],
        json!({"max-length": 3, "ha-mode": "all"})
    );
    let (_, other) = api.get("/api/queues/%2F/other").await;
    assert_eq!(other["messages"], 10, "the pattern does not match 'other'");
    assert_eq!(other["policy"], Value::Null);
    // An operator policy's lower limit wins over the policy's.
    let (s, _) = api
        .put(
            "/api/operator-policies/%2F/op",
            json!({"pattern": "^pq", "definition": {"max-length": 2, "message-ttl": 60000},
                   "apply-to": "queues"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, q) = api.get("/api/queues/%2F/pq.one").await;
    assert_eq!(q["messages"], 2);
    assert_eq!(q["operator_policy"], "op");
    assert_eq!(
        q["effective_policy_definition"],
        json!({"max-length": 2, "ha-mode": "all", "message-ttl": 60000})
    );
    // Replacing is 204; listing shows RabbitMQ's fields.
    let (s, _) = api
        .put(
            "/api/policies/%2F/cap",
            json!({"pattern": "^pq\\.", "definition": {"max-length": 5}, "apply-to": "queues"}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, list) = api.get("/api/policies").await;
    assert_eq!(
        list,
        json!([{"vhost": "/", "name": "cap", "pattern": "^pq\\.", "apply-to": "queues",
                "definition": {"max-length": 5}, "priority": 0}])
    );
    // Future queues get it too.
    declare_queue(&ch, "pq.two").await;
    let (_, q2) = api.get("/api/queues/%2F/pq.two").await;
    assert_eq!(q2["policy"], "cap");
    // Deleting falls back: no policy, and the operator policy still caps at 2.
    assert_eq!(
        api.delete("/api/policies/%2F/cap").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/api/policies/%2F/cap").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, q) = api.get("/api/queues/%2F/pq.one").await;
    assert_eq!(q["policy"], Value::Null);
    assert_eq!(q["effective_policy_definition"]["max-length"], 2);
    // Alternate exchange by policy, on an exchange that exists already.
    let (s, _) = api
        .put(
            "/api/policies/%2F/ae",
            json!({"pattern": "^amq\\.direct$", "definition": {"alternate-exchange": "amq.fanout"},
                   "apply-to": "exchanges"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, x) = api.get("/api/exchanges/%2F/amq.direct").await;
    assert_eq!(x["policy"], "ae");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_get_rabbitmqs_errors() {
    let (api, _broker) = Api::start().await;
    let cases = [
        (
            json!({"pattern": "x", "definition": {"foo": "bar"}}),
            "Validation failed\n\n[{&lt;&lt;\"foo\"&gt;&gt;,&lt;&lt;\"bar\"&gt;&gt;}] are not recognised policy settings\n",
        ),
        (
            json!({"pattern": "x", "definition": {"max-length": "five"}}),
            "Validation failed\n\n&lt;&lt;\"five\"&gt;&gt; is not a valid maximum length\n",
        ),
        (
            json!({"definition": {"max-length": 5}}),
            "[{key_missing,pattern}]",
        ),
        (json!({"pattern": "x"}), "[{key_missing,definition}]"),
        (
            json!({"pattern": "x", "definition": {}}),
            "Validation failed\n\nno policy provided\n",
        ),
        (
            json!({"pattern": "x", "definition": {"max-length": 5}, "apply-to": "bogus"}),
            "Validation failed\n\napply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'\n",
        ),
        (
            json!({"pattern": "x", "definition": {"max-length": 5}, "priority": "2"}),
            "Validation failed\n\npriority should be a number, actually was &lt;&lt;\"2\"&gt;&gt;\n",
        ),
    ];
    for (body, reason) in cases {
        let (s, v) = api.put("/api/policies/%2F/p", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            v,
            json!({"error": "bad_request", "reason": reason}),
            "{body}"
        );
    }
    let (s, v) = api
        .put(
            "/api/policies/%2F/p",
            json!({"pattern": "(", "definition": {"max-length": 5}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .starts_with("Validation failed\n\npattern should be regular expression but is invalid"));
    let (s, v) = api
        .put(
            "/api/policies/nosuch/p",
            json!({"pattern": "x", "definition": {"max-length": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v,
        json!({"error": "not_found", "reason": "vhost_not_found"})
    );
    // Operator policies take only limits, and their message is not escaped.
    let (s, v) = api
        .put(
            "/api/operator-policies/%2F/op",
            json!({"pattern": "x", "definition": {"dead-letter-exchange": "x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["reason"],
        "Validation failed\n\n[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings\n"
    );
    assert!(api
        .get("/api/policies")
        .await
        .1
        .as_array()
        .unwrap()
        .is_empty());
    // Runtime parameters of plugins Warren does not have are refused as RabbitMQ
    // refuses them when the plugin is off; global parameters are kept.
    let (s, v) = api
        .put(
            "/api/parameters/federation-upstream/%2F/up",
            json!({"value": {"uri": "amqp://x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["reason"],
        "Validation failed\n\ncomponent federation-upstream not found\n"
    );
    assert_eq!(
        api.get("/api/parameters/federation-upstream").await.1,
        json!([])
    );
    // The cluster name is RabbitMQ's `cluster_name` global parameter.
    assert_eq!(
        api.put("/api/cluster-name", json!({"name": "blue"}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get("/api/cluster-name").await.1,
        json!({"name": "blue"})
    );
    assert_eq!(api.get("/api/overview").await.1["cluster_name"], "blue");
    assert_eq!(
        api.get("/api/global-parameters/cluster_name").await.1["value"],
        "blue"
    );
    let (s, _) = api
        .put("/api/global-parameters/mine", json!({"value": {"a": 1}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        api.get("/api/global-parameters/mine").await.1,
        json!({"name": "mine", "value": {"a": 1}})
    );
    assert_eq!(
        api.delete("/api/global-parameters/mine").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get("/api/global-parameters/mine").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_travel_in_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let config = || warren_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..warren_server::Config::default()
    };
    let running = warren_server::start(config()).await.unwrap();
    let broker = running.broker().clone();
    let record = |name: &str, def: Value| warren_broker::policy::PolicyRecord {
        vhost: "/".into(),
        name: name.into(),
        pattern: "^durable\\.".into(),
        apply_to: "queues".into(),
        priority: 0,
        definition: def.as_object().unwrap().clone(),
    };
    broker
        .put_policy(
            warren_broker::policy::PolicyKind::Regular,
            record("ttl", json!({"message-ttl": 5000})),
        )
        .unwrap();
    broker
        .put_policy(
            warren_broker::policy::PolicyKind::Operator,
            record("cap", json!({"max-length": 7})),
        )
        .unwrap();
    let v = broker.vhost("/").unwrap();
    v.declare_queue(
        warren_broker::QueueOptions {
            name: "durable.q".into(),
            durable: true,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    drop((v, broker));
    running.shutdown().await;
    let running = warren_server::start(config()).await.unwrap();
    let http = warren_management::start(running.admin(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let api = Api {
        http,
        client: reqwest::Client::new(),
    };
    let (_, q) = api.get("/api/queues/%2F/durable.q").await;
    assert_eq!(q["policy"], "ttl");
    assert_eq!(q["operator_policy"], "cap");
    let args = running
        .broker()
        .vhost("/")
        .unwrap()
        .queue("durable.q", 1)
        .unwrap()
        .args();
    assert_eq!(args.message_ttl, Some(5000));
    assert_eq!(args.max_length, Some(7));
    // Exported as RabbitMQ exports them, and imported into another broker.
    let (_, defs) = api.get("/api/definitions").await;
    assert_eq!(
        defs["policies"],
        json!([{"vhost": "/", "name": "ttl", "pattern": "^durable\\.", "apply-to": "queues",
                "definition": {"message-ttl": 5000}, "priority": 0}])
    );
    assert!(defs["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["component"] == "operator_policy" && p["name"] == "cap"));
    let (other, _broker2) = Api::start().await;
    assert_eq!(
        other.post("/api/definitions", defs.clone()).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(other.get("/api/policies/%2F/ttl").await.0, StatusCode::OK);
    assert_eq!(
        other.get("/api/operator-policies/%2F/cap").await.0,
        StatusCode::OK
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_connection_counters_are_exact() {
    use lapin::options::{BasicConsumeOptions, BasicQosOptions};
    let (api, broker) = Api::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "chq").await;
    ch.basic_qos(7, BasicQosOptions::default()).await.unwrap();
    publish_confirmed(&ch, "chq", 5).await;
    // Unroutable, not mandatory: dropped (still confirmed).
    publish_one(&ch, "no-such-queue").await;
    let got = ch
        .basic_get(ss("chq"), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.basic_get(ss("chq"), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            ss("chq"),
            ss("c1"),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        crate::util::next_delivery(&mut consumer).await;
    }
    // No sleep: the connection reports its channels when asked.
    let (s, list) = api.get("/api/channels").await;
    assert_eq!(s, StatusCode::OK);
    let chans = list.as_array().unwrap();
    assert_eq!(chans.len(), 1, "{list}");
    let c = &chans[0];
    let (_, conns) = api.get("/api/connections").await;
    let conn_json = &conns[0];
    let conn_name = conn_json["name"].as_str().unwrap();
    assert_eq!(c["name"], format!("{conn_name} (1)"));
    assert_eq!(c["number"], 1);
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["connection_details"]["name"], conn_name);
    assert_eq!(c["consumer_count"], 1);
    assert_eq!(c["messages_unacknowledged"], 3);
    assert_eq!(c["messages_unconfirmed"], 0);
    assert_eq!(c["prefetch_count"], 7);
    assert_eq!(c["confirm"], true);
    assert_eq!(c["transactional"], false);
    let m = &c["message_stats"];
    assert_eq!(m["publish"], 6);
    assert_eq!(m["confirm"], 6);
    assert_eq!(m["drop_unroutable"], 1);
    assert_eq!(m["return_unroutable"], 0);
    assert_eq!(m["get"], 1);
    assert_eq!(m["get_no_ack"], 1);
    assert_eq!(m["deliver"], 3);
    assert_eq!(m["deliver_get"], 5);
    assert_eq!(m["ack"], 1);
    assert!(m["publish_details"]["rate"].is_number());
    // The same channel by name, through its connection and its vhost.
    let encoded = |s: &str| s.replace(' ', "%20").replace('>', "%3E");
    let (s, one) = api
        .get(&format!(
            "/api/channels/{}",
            encoded(c["name"].as_str().unwrap())
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["number"], 1);
    // One channel's object has its consumers; the queue's consumers name their channel
    // and connection, as RabbitMQ's do (the UI links them).
    assert_eq!(one["consumer_details"][0]["consumer_tag"], "c1");
    let (_, q) = api.get("/api/queues/%2F/chq").await;
    let qc = &q["consumer_details"][0];
    assert_eq!(qc["consumer_tag"], "c1");
    assert_eq!(qc["channel_details"]["name"], c["name"]);
    assert_eq!(qc["channel_details"]["connection_name"], conn_name);
    assert_eq!(qc["channel_details"]["user"], "guest");
    assert_eq!(qc["prefetch_count"], 7);
    assert_eq!(qc["queue"]["name"], "chq");
    let (_, all) = api.get("/api/consumers").await;
    assert_eq!(all[0], *qc, "the same consumer object everywhere");
    let (_, of_conn) = api
        .get(&format!("/api/connections/{}/channels", encoded(conn_name)))
        .await;
    assert_eq!(of_conn.as_array().unwrap().len(), 1);
    let (_, of_vhost) = api.get("/api/vhosts/%2F/channels").await;
    assert_eq!(of_vhost.as_array().unwrap().len(), 1);
    // The connection's own counters.
    assert_eq!(conn_json["channels"], 1);
    assert_eq!(conn_json["auth_mechanism"], "PLAIN");
    assert_eq!(conn_json["frame_max"], 131072);
    assert!(conn_json["recv_oct"].as_u64().unwrap() > 0);
    assert!(conn_json["send_oct"].as_u64().unwrap() > 0);
    let (_, overview) = api.get("/api/overview").await;
    assert_eq!(overview["object_totals"]["channels"], 1);
    // Closing the channel removes it.
    ch.close(200, "bye".into()).await.unwrap();
    let (_, list) = api.get("/api/channels").await;
    assert_eq!(list, json!([]));
}

/// The web UI: `/` and its assets come from the management listener with their content
/// types, a validator and no caching without revalidation; `/api/...` keeps the API's
/// JSON 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_is_served_next_to_the_api() {
    let (api, _broker) = Api::start().await;
    let fetch = |path: &'static str| {
        let req = api.client.get(api.url(path));
        async move { req.send().await.expect("HTTP request") }
    };
    let index = fetch("/").await;
    assert_eq!(index.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    assert!(header(&index, "content-security-policy").contains("script-src 'self'"));
    let etag = header(&index, "etag");
    assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
    let html = index.text().await.unwrap();
    assert!(html.contains("<title>Warren Management</title>"));
    for asset in ["js/app.js", "css/app.css", "img/favicon.svg"] {
        assert!(html.contains(asset), "index.html links {asset}");
    }
    assert_eq!(fetch("/index.html").await.text().await.unwrap(), html);

    for (path, content_type) in [
        ("/js/app.js", "text/javascript; charset=utf-8"),
        ("/css/app.css", "text/css; charset=utf-8"),
        ("/img/favicon.svg", "image/svg+xml"),
    ] {
        let r = fetch(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&r, "content-type"), content_type, "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    // The whole UI is small (docs/management.md states its weight).
    assert!(warren_management::ui::page_weight() < 150_000);

    // A revalidation with the current tag is a 304 without a body.
    let again = api
        .client
        .get(api.url("/"))
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again, "etag"), etag);

    // The API's own 404 is unchanged under /api, and the UI needs no login to load.
    let missing = fetch("/api/unknown").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&missing, "content-type"), "application/json");
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    assert_eq!(fetch("/no-such-page").await.status(), StatusCode::NOT_FOUND);

    // A 401 offers Basic auth to curl, but not to the page's own calls (no browser
    // dialog over the login form).
    let refused = |marked: bool| {
        let mut req = api
            .client
            .get(api.url("/api/whoami"))
            .basic_auth("guest", Some("wrong"));
        if marked {
            req = req.header("x-requested-with", "XMLHttpRequest");
        }
        async move { req.send().await.expect("HTTP request") }
    };
    let plain = refused(false).await;
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&plain, "www-authenticate"),
        "Basic realm=\"RabbitMQ Management\""
    );
    let from_page = refused(true).await;
    assert_eq!(from_page.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&from_page, "www-authenticate"), "");
    assert_eq!(
        from_page.json::<Value>().await.unwrap(),
        json!({"error": "not_authorized", "reason": "Login failed"})
    );
    assert_eq!(
        fetch("/js/missing.js").await.status(),
        StatusCode::NOT_FOUND
    );
}

/// The overview page shows the node's uptime and the management listener's port, as
/// RabbitMQ's API reports them: the uptime in milliseconds, the bound port rather than a
/// configured port 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_uptime_and_the_bound_management_port() {
    let (api, _broker) = Api::start().await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, nodes) = api.get("/api/nodes").await;
    assert_eq!(status, StatusCode::OK);
    assert!(nodes[0]["uptime"].as_u64().unwrap() >= 20, "{}", nodes[0]);
    let (_, overview) = api.get("/api/overview").await;
    let port = api.http.local_addr().port();
    let http = overview["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["protocol"] == "http")
        .cloned()
        .unwrap();
    assert_eq!(http["port"], json!(port));
    assert_eq!(overview["contexts"][0]["port"], json!(port.to_string()));
}

/// `/api/overview`'s publisher confirms and unroutable drops are the channels' counters
/// summed (as sampled every rate interval): the web UI's "Publisher confirm" line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_sums_the_channels_confirms_and_drops() {
    let (api, broker) = Api::start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "oq").await;
    publish_confirmed(&ch, "oq", 4).await;
    publish_one(&ch, "no-such-queue").await;
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = api.get("/api/overview").await.1["message_stats"].clone();
        if stats["confirm"] == json!(5) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stats["confirm"], json!(5), "{stats}");
    assert_eq!(stats["drop_unroutable"], json!(1), "{stats}");
    assert_eq!(stats["return_unroutable"], json!(0), "{stats}");
    assert!(stats["confirm_details"]["rate"].is_number());
}
