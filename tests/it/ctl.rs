//! RabbitMQ's tools (#12): the `warren` binary run as `rabbitmq-server`, `rabbitmqctl`,
//! `rabbitmq-diagnostics` and `rabbitmq-plugins`, driven the way test fixtures drive
//! RabbitMQ: environment variables, node names, output parsed line by line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A directory with the RabbitMQ-named links to the binary and a private control dir
/// (also used by `ctl_commands`).
pub(crate) struct Tools {
    pub(crate) dir: tempfile::TempDir,
}

impl Tools {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("install-links")
            .arg(dir.path().join("bin"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        Tools { dir }
    }

    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.dir.path().join("bin").join(name)
    }

    pub(crate) fn control_dir(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }

    /// Starts `rabbitmq-server` as a fixture would; returns it with its AMQP port.
    pub(crate) fn start_node(&self, name: &str) -> (Node, u16) {
        std::fs::write(self.plugins_file(), "[].\n").unwrap();
        self.start_node_with(name, &[])
    }

    /// The node's enabled plugins file (RABBITMQ_ENABLED_PLUGINS_FILE).
    pub(crate) fn plugins_file(&self) -> PathBuf {
        self.dir.path().join("enabled_plugins")
    }

    /// Starts `rabbitmq-server` with the plugins file as it is and more variables.
    pub(crate) fn start_node_with(&self, name: &str, env: &[(&str, &Path)]) -> (Node, u16) {
        let base = self.dir.path().join("mnesia");
        let plugins = self.plugins_file();
        let mut child = Command::new(self.bin("rabbitmq-server"))
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("WARREN_CONTROL_DIR", self.control_dir())
            .env("RABBITMQ_NODENAME", name)
            .env("RABBITMQ_NODE_PORT", "0")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", &base)
            .env("RABBITMQ_LOG_BASE", self.dir.path())
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_DIST_PORT", "25999")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rabbitmq-server");
        let stdout = child.stdout.take().unwrap();
        // Killed if the test fails before it stops the node.
        let child = Node(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains("Server startup complete;") {
                    let port = line
                        .split("AMQP listener on ")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                        .map(|a| a.port());
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("Server startup complete on stdout")
            .expect("port in the startup line");
        (child, port)
    }

    /// Runs a tool with the fixture's environment (and `node` as RABBITMQ_NODENAME).
    pub(crate) fn run(&self, tool: &str, node: Option<&str>, args: &[&str]) -> Output {
        self.run_with(tool, node, args, &[])
    }

    /// `run` with more environment variables.
    pub(crate) fn run_with(
        &self,
        tool: &str,
        node: Option<&str>,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Output {
        let mut cmd = Command::new(self.bin(tool));
        cmd.env("WARREN_CONTROL_DIR", self.control_dir())
            .env_remove("RABBITMQ_NODENAME")
            .env_remove("RABBITMQ_ENABLED_PLUGINS_FILE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .args(args);
        if let Some(n) = node {
            cmd.env("RABBITMQ_NODENAME", n);
        }
        cmd.output().unwrap()
    }
}

pub(crate) fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits for a node to exit and asserts that it exited with status 0.
/// A node started by a test: killed when dropped still running (a failed assertion
/// must not leave it holding its ports).
pub(crate) struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(crate) fn exited_ok(child: &mut Node) {
    let status = wait_exit(&mut child.0);
    assert!(status.success(), "the node exited with {status}");
}

pub(crate) fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "node did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixture_drives_two_nodes_by_name_and_by_environment() {
    let tools = Tools::new();
    let (mut one, port1) = tools.start_node("test1");
    let (mut two, port2) = tools.start_node("test2");
    assert_ne!(port1, port2);
    // Each node has its own data directory under RABBITMQ_MNESIA_BASE.
    let host = warren_server::config::hostname();
    assert!(tools
        .dir
        .path()
        .join("mnesia")
        .join(format!("test2@{host}"))
        .is_dir());
    // Each node logs to RABBITMQ_LOG_BASE/NODE.log, as RabbitMQ does (and not to
    // standard output, which had only the banner's log path and the startup line).
    for node in ["test1", "test2"] {
        let log = std::fs::read_to_string(tools.dir.path().join(format!("{node}@{host}.log")))
            .expect("the node's log file");
        assert!(log.contains("Server startup complete;"), "{log}");
        assert!(log.contains(&format!("{node}@{host}")), "{log}");
    }
    // By -n, and by the environment alone.
    let o = tools.run(
        "rabbitmqctl",
        None,
        &["-n", "test1", "add_vhost", "only-on-one"],
    );
    assert!(o.status.success(), "{o:?}");
    let vhosts = |node: &str| text(&tools.run("rabbitmqctl", Some(node), &["-q", "list_vhosts"]));
    assert!(vhosts("test1").contains("only-on-one"));
    assert!(!vhosts("test2").contains("only-on-one"));
    assert_eq!(vhosts("test2"), "name\n/\n");
    // A queue made over AMQP on node two is listed there, in rabbitmqctl's format.
    let conn = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port2}/%2f"))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    crate::util::declare_queue(&ch, "fixture.q").await;
    crate::util::publish(&ch, "", "fixture.q", b"m").await;
    crate::util::eventually(Duration::from_secs(10), "message queued", || {
        text(&tools.run(
            "rabbitmqctl",
            Some("test2"),
            &["-q", "list_queues", "name", "messages"],
        )) == "name\tmessages\nfixture.q\t1\n"
    })
    .await;
    let full = text(&tools.run("rabbitmqctl", Some("test2"), &["list_queues"]));
    assert_eq!(
        full,
        "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\nfixture.q\t1\n"
    );
    // No rows: nothing at all, not even the header.
    let empty = tools.run("rabbitmqctl", Some("test1"), &["-q", "list_queues", "name"]);
    assert!(empty.status.success());
    assert_eq!(text(&empty), "");
    // -s drops the header too; JSON keeps the column order.
    assert_eq!(
        text(&tools.run("rabbitmqctl", Some("test2"), &["-s", "list_queues", "name"])),
        "fixture.q\n"
    );
    assert_eq!(
        text(&tools.run(
            "rabbitmqctl",
            Some("test2"),
            &[
                "--formatter",
                "json",
                "-q",
                "list_queues",
                "name",
                "messages"
            ]
        )),
        "[\n{\"name\":\"fixture.q\",\"messages\":1}\n]\n"
    );
    // The connection is listed, and closing all of vhost / closes it with 320.
    let conns = text(&tools.run(
        "rabbitmqctl",
        Some("test2"),
        &["-q", "list_connections", "user", "peer_host", "vhost"],
    ));
    assert_eq!(conns, "user\tpeer_host\tvhost\nguest\t127.0.0.1\t/\n");
    let o = tools.run(
        "rabbitmqctl",
        Some("test2"),
        &["close_all_connections", "test over"],
    );
    assert!(o.status.success());
    crate::util::eventually(Duration::from_secs(10), "connection closed", || {
        !conn.status().connected()
    })
    .await;
    // The tools under their other names.
    assert!(tools
        .run("rabbitmq-diagnostics", Some("test2"), &["-q", "ping"])
        .status
        .success());
    assert!(tools
        .run("rabbitmq-diagnostics", Some("test2"), &["check_running"])
        .status
        .success());
    assert!(tools
        .run(
            "rabbitmq-plugins",
            Some("test2"),
            &["enable", "rabbitmq_management"]
        )
        .status
        .success());
    // stop ends the node; a stopped node is "unavailable" (69).
    assert!(tools
        .run("rabbitmqctl", Some("test2"), &["stop"])
        .status
        .success());
    exited_ok(&mut two);
    let down = tools.run("rabbitmqctl", Some("test2"), &["list_queues"]);
    assert_eq!(down.status.code(), Some(69));
    assert!(tools
        .run("rabbitmqctl", Some("test1"), &["stop"])
        .status
        .success());
    exited_ok(&mut one);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_permissions_and_errors_have_rabbitmqctls_output_and_exit_codes() {
    let tools = Tools::new();
    let (mut node, _) = tools.start_node("users");
    let ctl = |args: &[&str]| tools.run("rabbitmqctl", Some("users"), args);
    let o = ctl(&["add_user", "app", "pw"]);
    assert!(o.status.success());
    assert_eq!(
        text(&o),
        "Adding user \"app\" ...\nDone. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl help set_permissions' to learn more.\n"
    );
    assert_eq!(ctl(&["add_user", "app", "pw"]).status.code(), Some(70));
    assert_eq!(ctl(&["delete_user", "nobody"]).status.code(), Some(67));
    assert!(ctl(&["set_user_tags", "app", "monitoring", "management"])
        .status
        .success());
    assert_eq!(
        text(&ctl(&["-q", "list_users"])),
        "user\ttags\napp\t[monitoring, management]\nguest\t[administrator]\n"
    );
    assert!(
        ctl(&["set_permissions", "-p", "/", "app", "^app", ".*", ".*"])
            .status
            .success()
    );
    assert_eq!(
        text(&ctl(&["-q", "list_user_permissions", "app"])),
        "vhost\tconfigure\twrite\tread\n/\t^app\t.*\t.*\n"
    );
    assert!(text(&ctl(&["authenticate_user", "app", "pw"])).ends_with("Success\n"));
    assert_eq!(
        ctl(&["authenticate_user", "app", "bad"]).status.code(),
        Some(65)
    );
    assert_eq!(ctl(&["delete_vhost", "nope"]).status.code(), Some(65));
    assert_eq!(ctl(&["no_such_command"]).status.code(), Some(64));
    assert_eq!(
        ctl(&["list_queues", "no_such_column"]).status.code(),
        Some(64)
    );
    assert!(ctl(&[
        "set_policy",
        "cap",
        "^q",
        "{\"max-length\":3}",
        "--apply-to",
        "queues"
    ])
    .status
    .success());
    assert_eq!(
        text(&ctl(&["-q", "list_policies"])),
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n/\tcap\t^q\tqueues\t{\"max-length\":3}\t0\n"
    );
    assert_eq!(ctl(&["eval", "os:cmd(\"ls\")."]).status.code(), Some(70));
    assert!(ctl(&["stop"]).status.success());
    exited_ok(&mut node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_vm_memory_high_watermark_blocks_and_unblocks_publishers() {
    let tools = Tools::new();
    let (mut node, port) = tools.start_node("alarm");
    let conn = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    crate::util::declare_queue(&ch, "alarm.q").await;
    crate::util::publish(&ch, "", "alarm.q", b"m").await;
    let o = tools.run(
        "rabbitmqctl",
        Some("alarm"),
        &["set_vm_memory_high_watermark", "0.000001"],
    );
    assert!(o.status.success(), "{o:?}");
    // The next resource check raises the alarm.
    crate::util::eventually(Duration::from_secs(10), "the memory alarm", || {
        tools
            .run(
                "rabbitmq-diagnostics",
                Some("alarm"),
                &["check_local_alarms"],
            )
            .status
            .code()
            != Some(0)
    })
    .await;
    // As on RabbitMQ, a connection is blocked when it publishes during the alarm.
    crate::util::publish(&ch, "", "alarm.q", b"during").await;
    crate::util::eventually(Duration::from_secs(10), "connection.blocked", || {
        conn.status().blocked()
    })
    .await;
    assert!(tools
        .run(
            "rabbitmqctl",
            Some("alarm"),
            &["set_vm_memory_high_watermark", "0.4"]
        )
        .status
        .success());
    crate::util::eventually(Duration::from_secs(10), "connection.unblocked", || {
        !conn.status().blocked()
    })
    .await;
    assert!(tools
        .run("rabbitmqctl", Some("alarm"), &["stop"])
        .status
        .success());
    exited_ok(&mut node);
}

#[test]
fn install_links_makes_the_rabbitmq_names() {
    let tools = Tools::new();
    for name in [
        "rabbitmq-server",
        "rabbitmqctl",
        "rabbitmq-diagnostics",
        "rabbitmq-plugins",
        "rabbitmqadmin",
    ] {
        assert!(Path::new(&tools.bin(name)).exists(), "{name}");
    }
    // With no node running, rabbitmqctl says so with exit code 69.
    let o = tools.run("rabbitmqctl", Some("absent"), &["status"]);
    assert_eq!(o.status.code(), Some(69));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_app_reset_start_app_leaves_a_fresh_node() {
    use lapin::options::BasicPublishOptions;
    let tools = Tools::new();
    let (mut node, port) = tools.start_node("resettable");
    let ctl = |args: &[&str]| tools.run("rabbitmqctl", Some("resettable"), args);
    assert!(ctl(&["add_vhost", "extra"]).status.success());
    assert!(ctl(&["add_user", "someone", "pw"]).status.success());
    assert!(ctl(&["set_policy", "p", ".*", "{\"max-length\":5}"])
        .status
        .success());
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = crate::util::connect_uri(&uri).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-queue-mode".into(),
        lapin::types::AMQPValue::LongString("lazy".into()),
    );
    ch.queue_declare(
        crate::util::ss("durable.q"),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.basic_publish(
        crate::util::ss(""),
        crate::util::ss("durable.q"),
        BasicPublishOptions::default(),
        b"persistent",
        lapin::BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    // stop_app closes client connections (320) and refuses new ones.
    assert!(ctl(&["stop_app"]).status.success());
    crate::util::eventually(Duration::from_secs(10), "closed by stop_app", || {
        !conn.status().connected()
    })
    .await;
    assert!(crate::util::connect_uri(&uri).await.is_err());
    assert!(ctl(&["reset"]).status.success());
    assert!(ctl(&["start_app"]).status.success());
    // As in RabbitMQ, reset refuses to run while the application runs (64).
    let refused = ctl(&["reset"]);
    assert_eq!(refused.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&refused.stderr)
        .starts_with("Error: this command requires the 'rabbit' app to be stopped"));
    assert!(ctl(&["stop_app"]).status.success());
    assert!(ctl(&["reset"]).status.success());
    assert!(ctl(&["start_app"]).status.success());
    // Only what a fresh node has.
    assert_eq!(text(&ctl(&["-q", "list_vhosts"])), "name\n/\n");
    assert_eq!(
        text(&ctl(&["-q", "list_users"])),
        "user\ttags\nguest\t[administrator]\n"
    );
    assert_eq!(text(&ctl(&["-q", "list_queues"])), "");
    // (An empty list of policies is an empty line, as in RabbitMQ.)
    assert_eq!(text(&ctl(&["-q", "list_policies"])), "\n");
    assert_eq!(
        text(&ctl(&["-q", "list_permissions"])),
        "user\tconfigure\twrite\tread\nguest\t.*\t.*\t.*\n"
    );
    let conn = crate::util::connect_uri(&uri).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            crate::util::ss("durable.q"),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "the stored message is gone");
    // And the reset survives a restart: nothing comes back from the data directory.
    assert!(ctl(&["stop"]).status.success());
    exited_ok(&mut node);
    let (mut node, _) = tools.start_node("resettable");
    assert_eq!(
        text(&tools.run("rabbitmqctl", Some("resettable"), &["-q", "list_vhosts"])),
        "name\n/\n"
    );
    assert!(tools
        .run("rabbitmqctl", Some("resettable"), &["stop"])
        .status
        .success());
    exited_ok(&mut node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_export_and_import_through_rabbitmqctl() {
    let tools = Tools::new();
    let (mut a, port) = tools.start_node("defs-a");
    let (mut b, port_b) = tools.start_node("defs-b");
    let conn = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        crate::util::ss("defs.x"),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        crate::util::ss("defs.q"),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        crate::util::ss("defs.q"),
        crate::util::ss("defs.x"),
        crate::util::ss("k.#"),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(tools
        .run(
            "rabbitmqctl",
            Some("defs-a"),
            &["add_user", "carried", "pw"]
        )
        .status
        .success());
    assert!(tools
        .run(
            "rabbitmqctl",
            Some("defs-a"),
            &["set_permissions", "carried", ".*", ".*", ".*"]
        )
        .status
        .success());
    let file = tools.dir.path().join("defs.json");
    let file = file.to_str().unwrap();
    let o = tools.run("rabbitmqctl", Some("defs-a"), &["export_definitions", file]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(doc["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "defs.q"));
    let o = tools.run("rabbitmqctl", Some("defs-b"), &["import_definitions", file]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        text(&tools.run(
            "rabbitmqctl",
            Some("defs-b"),
            &[
                "-q",
                "list_bindings",
                "source_name",
                "destination_name",
                "routing_key"
            ]
        )),
        "source_name\tdestination_name\trouting_key\n\tdefs.q\tdefs.q\ndefs.x\tdefs.q\tk.#\n"
    );
    assert!(
        text(&tools.run("rabbitmqctl", Some("defs-b"), &["-q", "list_users"])).contains("carried")
    );
    // The imported user logs in on node b with its password (the hash moved).
    let carried = crate::util::connect_uri(&format!("amqp://carried:pw@127.0.0.1:{port_b}/%2f"))
        .await
        .expect("imported user logs in");
    carried.close(200, "bye".into()).await.unwrap();
    // A malformed file changes nothing and says why (65).
    std::fs::write(
        tools.dir.path().join("bad.json"),
        "{\"queues\": [{\"name\": 1}]}",
    )
    .unwrap();
    let bad = tools.run(
        "rabbitmqctl",
        Some("defs-b"),
        &[
            "import_definitions",
            tools.dir.path().join("bad.json").to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(65));
    for n in ["defs-a", "defs-b"] {
        assert!(tools
            .run("rabbitmqctl", Some(n), &["stop"])
            .status
            .success());
    }
    exited_ok(&mut a);
    exited_ok(&mut b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_on_copies_publishes_and_deliveries_to_the_firehose() {
    use lapin::options::{BasicGetOptions, QueueBindOptions};
    let tools = Tools::new();
    let (mut node, port) = tools.start_node("tracer");
    let conn = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    crate::util::declare_queue(&ch, "work").await;
    crate::util::declare_queue(&ch, "firehose").await;
    ch.queue_bind(
        crate::util::ss("firehose"),
        crate::util::ss("amq.rabbitmq.trace"),
        crate::util::ss("#"),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    // Off: nothing is copied.
    crate::util::publish(&ch, "", "work", b"untraced").await;
    assert!(tools
        .run("rabbitmqctl", Some("tracer"), &["trace_on"])
        .status
        .success());
    crate::util::publish(&ch, "", "work", b"traced").await;
    let get = |q: &'static str, ch: lapin::Channel| async move {
        crate::util::within("basic.get", async {
            loop {
                if let Some(m) = ch
                    .basic_get(crate::util::ss(q), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    return m;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    };
    // The untraced message, then the traced one, are delivered by basic.get.
    assert_eq!(get("work", ch.clone()).await.delivery.data, b"untraced");
    assert_eq!(get("work", ch.clone()).await.delivery.data, b"traced");
    // Firehose: publish of "traced", then both deliveries (tracing was on for both gets).
    let p = get("firehose", ch.clone()).await;
    assert_eq!(p.delivery.routing_key.as_str(), "publish.");
    assert_eq!(p.delivery.data, b"traced");
    let headers = p.delivery.properties.headers().clone().unwrap();
    let h = headers.inner();
    assert!(
        matches!(h.get("exchange_name"), Some(lapin::types::AMQPValue::LongString(s)) if s.as_bytes().is_empty())
    );
    assert!(
        h.contains_key("routing_keys") && h.contains_key("properties") && h.contains_key("node")
    );
    let d1 = get("firehose", ch.clone()).await;
    assert_eq!(d1.delivery.routing_key.as_str(), "deliver.work");
    assert_eq!(d1.delivery.data, b"untraced");
    let d2 = get("firehose", ch.clone()).await;
    assert_eq!(d2.delivery.routing_key.as_str(), "deliver.work");
    // Off again: nothing more.
    assert!(tools
        .run("rabbitmqctl", Some("tracer"), &["trace_off"])
        .status
        .success());
    crate::util::publish(&ch, "", "work", b"after").await;
    assert_eq!(get("work", ch.clone()).await.delivery.data, b"after");
    // What is left are copies of the firehose's own deliveries while tracing was on
    // (RabbitMQ traces those too); nothing of the message published after trace_off.
    let mut left = 0;
    while let Some(m) = ch
        .basic_get(
            crate::util::ss("firehose"),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        assert_eq!(m.delivery.routing_key.as_str(), "deliver.firehose");
        assert_ne!(m.delivery.data, b"after");
        left += 1;
    }
    assert_eq!(
        left, 3,
        "one copy per basic.get on the firehose while tracing"
    );
    // The switch is kept across a restart, as RabbitMQ keeps it in the vhost's metadata.
    assert!(tools
        .run("rabbitmqctl", Some("tracer"), &["trace_on"])
        .status
        .success());
    let tracing = || {
        text(&tools.run(
            "rabbitmqctl",
            Some("tracer"),
            &["-q", "list_vhosts", "name", "tracing"],
        ))
    };
    assert_eq!(tracing(), "name\ttracing\n/\ttrue\n");
    drop(conn);
    assert!(tools
        .run("rabbitmqctl", Some("tracer"), &["stop"])
        .status
        .success());
    exited_ok(&mut node);
    let (mut node, port) = tools.start_node("tracer");
    assert_eq!(tracing(), "name\ttracing\n/\ttrue\n");
    let conn = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    crate::util::declare_queue(&ch, "firehose2").await;
    ch.queue_bind(
        crate::util::ss("firehose2"),
        crate::util::ss("amq.rabbitmq.trace"),
        crate::util::ss("publish.#"),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    crate::util::publish(&ch, "", "work", b"after restart").await;
    assert_eq!(
        get("firehose2", ch.clone()).await.delivery.data,
        b"after restart"
    );
    assert!(tools
        .run("rabbitmqctl", Some("tracer"), &["stop"])
        .status
        .success());
    exited_ok(&mut node);
}

#[test]
fn rabbitmq_server_detached_runs_in_the_background_until_stopped() {
    let tools = Tools::new();
    let plugins = tools.dir.path().join("enabled_plugins");
    std::fs::write(&plugins, "[].\n").unwrap();
    let status = Command::new(tools.bin("rabbitmq-server"))
        .arg("-detached")
        .current_dir(tools.dir.path())
        .env("WARREN_CONTROL_DIR", tools.control_dir())
        .env("RABBITMQ_NODENAME", "background")
        .env("RABBITMQ_NODE_PORT", "0")
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_MNESIA_BASE", tools.dir.path().join("mnesia"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .status()
        .unwrap();
    // The launcher returns at once; the node comes up on its own.
    assert!(status.success());
    let ready = tools.run(
        "rabbitmqctl",
        Some("background"),
        &["-t", "30", "await_startup"],
    );
    assert!(ready.status.success(), "{ready:?}");
    assert_eq!(
        text(&tools.run("rabbitmqctl", Some("background"), &["-q", "list_vhosts"])),
        "name\n/\n"
    );
    assert!(tools
        .run("rabbitmqctl", Some("background"), &["stop"])
        .status
        .success());
    // Once stopped, the node is unavailable (69).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = tools.run("rabbitmqctl", Some("background"), &["-q", "ping"]);
        if o.status.code() == Some(69) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node still answers");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the native `rabbitmqadmin` against a management listener; `stdin` is its input.
fn rabbitmqadmin(tools: &Tools, port: u16, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(tools.bin("rabbitmqadmin"))
        .env("HOME", tools.dir.path())
        .args(["-H", "127.0.0.1", "-P", &port.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rabbitmqadmin");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_declares_lists_publishes_gets_and_fails_as_the_v1_tool() {
    let tools = Tools::new();
    let broker = crate::util::TestBroker::start().await;
    let http = warren_management::start(broker.running().admin(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("management API starts");
    let port = http.local_addr().port();
    // Every blocking call runs off the runtime's threads.
    let run = |args: Vec<&'static str>, stdin: &'static str| {
        let tools = &tools;
        tokio::task::block_in_place(move || rabbitmqadmin(tools, port, &args, stdin))
    };

    let o = run(
        vec![
            "declare",
            "queue",
            "name=adm-q",
            "durable=false",
            r#"arguments={"x-max-length": 5}"#,
        ],
        "",
    );
    assert_eq!(
        (o.status.code(), text(&o)),
        (Some(0), "queue declared\n".into())
    );
    let o = run(vec!["publish", "routing_key=adm-q", "payload=hello"], "");
    assert_eq!(text(&o), "Message published\n");
    // Without payload=, the body is standard input.
    let o = run(vec!["publish", "routing_key=adm-q"], "from stdin");
    assert_eq!(text(&o), "Message published\n");
    let o = run(
        vec![
            "publish",
            "exchange=amq.direct",
            "routing_key=nowhere",
            "payload=x",
        ],
        "",
    );
    assert_eq!(text(&o), "Message published but NOT routed\n");

    // Counts are exact at once, so the table shows both messages.
    let o = run(
        vec![
            "list",
            "queues",
            "name",
            "messages",
            "arguments.x-max-length",
        ],
        "",
    );
    let table = text(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], lines[2], "{table}");
    assert!(
        lines[1].starts_with("| name  | messages | arguments.x-max-length |"),
        "{table}"
    );
    assert!(
        lines.contains(&"| adm-q | 2        | 5                      |"),
        "{table}"
    );
    let o = run(
        vec!["-f", "tsv", "-q", "list", "queues", "name", "durable"],
        "",
    );
    assert_eq!(text(&o), "adm-q\tFalse\n");
    let o = run(vec!["-f", "kvp", "list", "exchanges", "name", "type"], "");
    assert!(
        text(&o).contains("name=\"amq.topic\" type=\"topic\"\n"),
        "{}",
        text(&o)
    );
    let o = run(vec!["-f", "pretty_json", "list", "vhosts", "name"], "");
    assert_eq!(text(&o), "[\n  {\n    \"name\": \"/\"\n  }\n]\n");

    let o = run(
        vec![
            "-f",
            "raw_json",
            "get",
            "queue=adm-q",
            "count=2",
            "ackmode=ack_requeue_false",
        ],
        "",
    );
    let got: serde_json::Value = serde_json::from_str(&text(&o)).expect("JSON");
    let payloads: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["hello", "from stdin"]);
    assert_eq!(
        text(&run(vec!["list", "queues", "name"], ""))
            .lines()
            .count(),
        5
    );
    assert_eq!(
        text(&run(vec!["purge", "queue", "name=adm-q"], "")),
        "queue purged\n"
    );
    assert_eq!(
        text(&run(vec!["delete", "queue", "name=adm-q"], "")),
        "queue deleted\n"
    );

    // Errors: a missing object, wrong credentials, usage and option errors.
    let o = run(vec!["delete", "queue", "name=adm-q"], "");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "*** Not found: /api/queues/%2F/adm-q\n\n"
    );
    let o = run(vec!["-p", "wrong", "list", "queues"], "");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "*** Access refused: /api/queues?columns=name,messages\n\n"
    );
    let o = run(vec!["declare", "queue"], "");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "\nERROR: mandatory argument \"name\" is required\n\nrabbitmqadmin --help for help\n\n"
    );
    let o = run(vec!["--bogus"], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .ends_with("rabbitmqadmin: error: no such option: --bogus\n"));
    // A bad body is refused by the API with its reason.
    let o = run(
        vec![
            "declare",
            "queue",
            "name=adm-bad",
            r#"arguments={"x-max-length": "x"}"#,
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("*** "),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // No server at all.
    let o = tokio::task::block_in_place(|| rabbitmqadmin(&tools, 1, &["list", "queues"], ""));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "*** Could not connect: [Errno 111] Connection refused\n\n"
    );
}
