//! RabbitMQ's tools on commands that would disturb a shared RabbitMQ (memory and disk
//! limits, alarms, closing every connection, enabling and disabling plugins), each run
//! under its RabbitMQ name against a node started as `rabbitmq-server`. The expected
//! output is what rabbitmqctl, rabbitmq-diagnostics and rabbitmq-plugins 3.10 print
//! (taken from the real tools; where only RabbitMQ's source could be consulted, the
//! test says so). The commands that leave a shared broker as it was are checked against
//! both brokers in conformance/test_rabbitmqctl.py.

use std::path::Path;
use std::time::Duration;

use crate::ctl::{exited_ok, text, Tools};

fn full(name: &str) -> String {
    format!("{name}@{}", warren_server::config::hostname())
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_disk_limits_and_the_alarm_checks() {
    let tools = Tools::new();
    let (mut child, _) = tools.start_node("limits");
    let node = full("limits");
    let ctl = |args: &[&str]| tools.run("rabbitmqctl", Some("limits"), args);
    let diag = |args: &[&str]| tools.run("rabbitmq-diagnostics", Some("limits"), args);

    let o = ctl(&["set_vm_memory_high_watermark", "0.4"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Setting memory threshold on {node} to 0.4 ...\n")
    );
    let o = ctl(&["-q", "set_vm_memory_high_watermark", "0.4"]);
    assert_eq!((o.status.code(), text(&o)), (Some(0), String::new()));
    // (From RabbitMQ's source: the absolute form names the value in bytes.)
    let o = ctl(&["set_vm_memory_high_watermark", "absolute", "64GB"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Setting memory threshold on {node} to 64GB bytes ...\n")
    );
    let o = ctl(&["set_disk_free_limit", "50000000"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Setting disk free limit on {node} to 50000000 bytes ...\n")
    );
    let o = ctl(&["set_disk_free_limit", "mem_relative", "0.01"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Setting disk free limit on {node} to 0.01 times the total RAM ...\n")
    );
    assert_eq!(
        text(&ctl(&["-q", "set_disk_free_limit", "50MB"])),
        "",
        "-q: no banner"
    );

    // No alarm yet.
    let asking = format!("Asking node {node} to report any local resource alarms ...\n");
    let o = diag(&["check_local_alarms"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("{asking}Node {node} reported no local alarms\n")
    );

    // The memory alarm, as client test suites set it; the checks fail with 69 and name
    // it (the message from RabbitMQ's source: its alarm lines).
    let set = "rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []}).";
    let clear = "rabbit_alarm:clear_alarm({{resource_limit, memory, node()}, []}).";
    let o = ctl(&["eval", set]);
    assert_eq!((o.status.code(), text(&o)), (Some(0), "ok\n".to_string()));
    for check in ["check_local_alarms", "check_alarms"] {
        let o = diag(&[check]);
        assert_eq!(o.status.code(), Some(69), "{check}: {o:?}");
        assert_eq!(text(&o), asking);
        assert_eq!(err(&o), format!("Error:\nMemory alarm on node {node}\n"));
    }
    let status = text(&ctl(&["status"]));
    assert!(
        status.contains(&format!(
            "\u{1b}[1mAlarms\u{1b}[0m\n\nMemory alarm on node {node}\n\n"
        )),
        "{status}"
    );
    let o = ctl(&["-q", "eval", clear]);
    assert_eq!((o.status.code(), text(&o)), (Some(0), "ok\n".to_string()));
    let o = diag(&["check_alarms"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("{asking}Node {node} reported no alarms, local or clusterwide\n")
    );

    // A disk limit above the free space sets the disk alarm at once; a negative limit
    // (taken by rabbitmqctl) lifts it.
    let o = ctl(&["set_disk_free_limit", "1000000000GB"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = diag(&["-q", "check_local_alarms"]);
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert_eq!(
        err(&o),
        format!("Error:\nFree disk space alarm on node {node}\n")
    );
    let o = ctl(&["set_disk_free_limit", "-5"]);
    assert_eq!(
        (o.status.code(), text(&o)),
        (
            Some(0),
            format!("Setting disk free limit on {node} to -5 bytes ...\n")
        )
    );
    assert_eq!(diag(&["-q", "check_local_alarms"]).status.code(), Some(0));

    assert!(ctl(&["stop"]).status.success());
    exited_ok(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_connections_global_closes_them_in_every_vhost() {
    let tools = Tools::new();
    let (mut child, port) = tools.start_node("closer");
    let node = full("closer");
    let ctl = |args: &[&str]| tools.run("rabbitmqctl", Some("closer"), args);
    assert!(ctl(&["add_vhost", "other"]).status.success());
    assert!(
        ctl(&["set_permissions", "-p", "other", "guest", ".*", ".*", ".*"])
            .status
            .success()
    );
    let a = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .await
        .unwrap();
    let b = crate::util::connect_uri(&format!("amqp://guest:guest@127.0.0.1:{port}/other"))
        .await
        .unwrap();
    let o = ctl(&["close_all_connections", "--global", "maintenance"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!(
            "Closing all connections to node {node} (across all vhosts), reason: maintenance...\nClosed 2 connections\n"
        )
    );
    crate::util::eventually(Duration::from_secs(10), "both closed", || {
        !a.status().connected() && !b.status().connected()
    })
    .await;
    let o = ctl(&["-q", "close_all_connections", "--global", "again"]);
    assert_eq!(text(&o), "Closed 0 connections\n");
    assert!(ctl(&["stop"]).status.success());
    exited_ok(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_plugins_follows_the_enabled_plugins_file() {
    let tools = Tools::new();
    // Management and Prometheus on free ports, as the file enables them.
    let conf = tools.dir.path().join("rabbitmq.conf");
    std::fs::write(
        &conf,
        "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = 0\nprometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = 0\nstream.listeners.tcp.default = 127.0.0.1:0\n",
    )
    .unwrap();
    let file = tools.plugins_file();
    std::fs::write(&file, "[rabbitmq_management,rabbitmq_prometheus].\n").unwrap();
    let env: [(&str, &Path); 1] = [("RABBITMQ_CONFIG_FILE", &conf)];
    let (mut child, port) = tools.start_node_with("plugged", &env);
    let node = full("plugged");
    let plugins = |args: &[&str]| {
        tools.run_with(
            "rabbitmq-plugins",
            Some("plugged"),
            args,
            &[("RABBITMQ_ENABLED_PLUGINS_FILE", &file)],
        )
    };
    let v = warren_server::config::RABBITMQ_VERSION;
    let legend = format!(
        " Configured: E = explicitly enabled; e = implicitly enabled\n | Status: * = running on {node}\n |/\n"
    );

    // list: sorted, names padded to the longest, E/e for explicit/implicit, * running.
    let o = plugins(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!(
            "Listing plugins with pattern \".*\" ...\n{legend}\
             [  ] rabbitmq_auth_mechanism_ssl {v}\n\
             [E*] rabbitmq_management         {v}\n\
             [e*] rabbitmq_management_agent   {v}\n\
             [E*] rabbitmq_prometheus         {v}\n\
             [  ] rabbitmq_stream             {v}\n\
             [e*] rabbitmq_web_dispatch       {v}\n"
        )
    );
    // As RabbitMQ 3.10 prints them for the same enabled plugins (its version aside).
    assert_eq!(
        text(&plugins(&["-q", "list", "-e"])),
        format!(
            "[E*] rabbitmq_management       {v}\n\
             [e*] rabbitmq_management_agent {v}\n\
             [E*] rabbitmq_prometheus       {v}\n\
             [e*] rabbitmq_web_dispatch     {v}\n"
        )
    );
    assert_eq!(
        text(&plugins(&["list", "-E"])),
        format!(
            "Listing plugins with pattern \".*\" ...\n{legend}\
             [E*] rabbitmq_management {v}\n\
             [E*] rabbitmq_prometheus {v}\n"
        )
    );
    assert_eq!(
        text(&plugins(&["list", "-m", "agent|dispatch"])),
        "Listing plugins with pattern \"agent|dispatch\" ...\nrabbitmq_management_agent\nrabbitmq_web_dispatch\n"
    );
    assert_eq!(
        text(&plugins(&["list", "nomatch"])),
        format!("Listing plugins with pattern \"nomatch\" ...\n{legend}")
    );

    // is_enabled asks the node.
    let o = plugins(&["is_enabled", "rabbitmq_management"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!(
            "Asking node {node} if plugin rabbitmq_management is enabled...\nPlugin rabbitmq_management is enabled on node {node}\n"
        )
    );
    assert_eq!(
        text(&plugins(&[
            "-q",
            "is_enabled",
            "rabbitmq_management",
            "rabbitmq_prometheus"
        ])),
        format!("Plugins rabbitmq_management, rabbitmq_prometheus are enabled on node {node}\n")
    );
    let running = "rabbitmq_management, rabbitmq_management_agent, rabbitmq_prometheus, rabbitmq_web_dispatch";
    let o = plugins(&["is_enabled", "rabbitmq_shovel", "rabbitmq_nope"]);
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Asking node {node} if plugins rabbitmq_shovel, rabbitmq_nope are enabled...\n")
    );
    assert_eq!(
        err(&o),
        format!("Error:\nPlugins rabbitmq_shovel, rabbitmq_nope are not enabled on node {node}. Enabled plugins and dependencies: {running}\n")
    );
    let o = plugins(&["is_enabled", "rabbitmq_management", "rabbitmq_nope"]);
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert_eq!(
        err(&o),
        format!("Error:\nPlugin rabbitmq_nope is not enabled on node {node}. Enabled plugins and dependencies: {running}\n")
    );

    // enable / disable that change nothing: RabbitMQ's words, the file untouched.
    let configured = format!(
        "The following plugins have been configured:\n  rabbitmq_management\n  rabbitmq_management_agent\n  rabbitmq_prometheus\n  rabbitmq_web_dispatch\nApplying plugin configuration to {node}...\nPlugin configuration unchanged.\n"
    );
    let o = plugins(&["enable", "rabbitmq_management"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Enabling plugins on node {node}:\nrabbitmq_management\n{configured}")
    );
    let o = plugins(&["disable", "rabbitmq_shovel"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Disabling plugins on node {node}:\nrabbitmq_shovel\n{configured}")
    );
    let o = plugins(&["enable", "rabbitmq_nope"]);
    assert_eq!(o.status.code(), Some(70), "{o:?}");
    assert_eq!(
        text(&o),
        format!("Enabling plugins on node {node}:\nrabbitmq_nope\n")
    );
    assert_eq!(err(&o), "Error:\n{:plugins_not_found, [:rabbitmq_nope]}\n");
    let o = plugins(&["enable"]);
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    assert!(err(&o).starts_with("Error (argument validation): not enough arguments.\n"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[rabbitmq_management,rabbitmq_prometheus].\n"
    );

    // The HTTP listeners are reported with the ports they have.
    let o = tools.run(
        "rabbitmq-diagnostics",
        Some("plugged"),
        &["-q", "listeners"],
    );
    let listeners = text(&o);
    let lines: Vec<&str> = listeners.lines().collect();
    assert_eq!(lines.len(), 3, "{listeners}");
    assert!(
        lines[0].starts_with("Interface: 127.0.0.1, port: ")
            && lines[0].ends_with(", protocol: http, purpose: HTTP API"),
        "{listeners}"
    );
    assert!(
        lines[1]
            .ends_with(", protocol: http/prometheus, purpose: Prometheus exporter API over HTTP"),
        "{listeners}"
    );
    assert_eq!(
        lines[2],
        format!(
            "Interface: 127.0.0.1, port: {port}, protocol: amqp, purpose: AMQP 0-9-1 and AMQP 1.0"
        )
    );
    assert!(!lines[0].contains("port: 0,") && !lines[1].contains("port: 0,"));
    let o = tools.run(
        "rabbitmq-diagnostics",
        Some("plugged"),
        &["-q", "check_port_connectivity"],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(text(&o).starts_with("Successfully connected to ports "));
    assert_eq!(
        text(&o).matches(", ").count(),
        2,
        "three ports: {}",
        text(&o)
    );
    let o = tools.run(
        "rabbitmq-diagnostics",
        Some("plugged"),
        &["-q", "check_protocol_listener", "management"],
    );
    assert_eq!(
        text(&o),
        format!("A listener for protocol http is running on node {node}.\n")
    );

    // Disabling one writes the file; the node applies it when it starts next (the
    // words after "Applying" are RabbitMQ's for a change it could not apply online,
    // from its source).
    let o = plugins(&["disable", "rabbitmq_prometheus"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!(
            "Disabling plugins on node {node}:\nrabbitmq_prometheus\nThe following plugins have been configured:\n  rabbitmq_management\n  rabbitmq_management_agent\n  rabbitmq_web_dispatch\nApplying plugin configuration to {node}...\nThe following plugins have been disabled:\n  rabbitmq_prometheus\n\nset 3 plugins.\nOffline change; changes will take effect at broker restart.\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[rabbitmq_management].\n"
    );
    // Still running until the restart, no longer enabled.
    assert!(text(&plugins(&["-q", "list", "prometheus"]))
        .contains(&format!("[ *] rabbitmq_prometheus {v}\n")));
    assert!(tools
        .run("rabbitmqctl", Some("plugged"), &["stop"])
        .status
        .success());
    exited_ok(&mut child);

    // A stopped node: list says so, is_enabled cannot tell (69).
    assert_eq!(
        text(&plugins(&["list", "-E"])),
        format!(
            "Listing plugins with pattern \".*\" ...\n Configured: E = explicitly enabled; e = implicitly enabled\n | Status: [failed to contact {node} - status not shown]\n |/\n[E ] rabbitmq_management {v}\n"
        )
    );
    assert_eq!(
        plugins(&["is_enabled", "rabbitmq_management"])
            .status
            .code(),
        Some(69)
    );

    let (mut child, _) = tools.start_node_with("plugged", &env);
    let o = plugins(&["is_enabled", "rabbitmq_prometheus"]);
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert_eq!(
        err(&o),
        format!("Error:\nPlugin rabbitmq_prometheus is not enabled on node {node}. Enabled plugins and dependencies: rabbitmq_management, rabbitmq_management_agent, rabbitmq_web_dispatch\n")
    );
    // Enabling it back lists only what is new.
    let o = plugins(&["-q", "enable", "rabbitmq_prometheus"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        text(&o),
        format!(
            "The following plugins have been configured:\n  rabbitmq_management\n  rabbitmq_management_agent\n  rabbitmq_prometheus\n  rabbitmq_web_dispatch\nApplying plugin configuration to {node}...\nThe following plugins have been enabled:\n  rabbitmq_prometheus\n\nset 4 plugins.\nOffline change; changes will take effect at broker restart.\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[rabbitmq_management,rabbitmq_prometheus].\n"
    );
    assert!(tools
        .run("rabbitmqctl", Some("plugged"), &["stop"])
        .status
        .success());
    exited_ok(&mut child);

    // The stream protocol listener runs only with rabbitmq_stream enabled, as in
    // RabbitMQ (above, without it, the node listed no stream listener).
    let o = plugins(&["-q", "enable", "rabbitmq_stream"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[rabbitmq_management,rabbitmq_prometheus,rabbitmq_stream].\n"
    );
    let (mut child, _) = tools.start_node_with("plugged", &env);
    let o = plugins(&["-q", "is_enabled", "rabbitmq_stream"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = tools.run(
        "rabbitmq-diagnostics",
        Some("plugged"),
        &["-q", "listeners"],
    );
    let listeners = text(&o);
    let stream = listeners
        .lines()
        .find(|l| l.ends_with(", protocol: stream, purpose: stream"))
        .unwrap_or_else(|| panic!("a stream listener: {listeners}"));
    assert!(
        stream.starts_with("Interface: 127.0.0.1, port: ") && !stream.contains("port: 0,"),
        "{listeners}"
    );
    assert!(tools
        .run("rabbitmqctl", Some("plugged"), &["stop"])
        .status
        .success());
    exited_ok(&mut child);
}

#[test]
fn rabbitmq_plugins_enable_succeeds_without_an_enabled_plugins_file() {
    // Setup scripts (Dockerfiles, CI) run `rabbitmq-plugins enable ...` before any node
    // exists and without RABBITMQ_ENABLED_PLUGINS_FILE: that must not fail.
    let tools = crate::ctl::Tools::new();
    for plugins in [
        &["rabbitmq_management"][..],
        &["rabbitmq_auth_mechanism_ssl", "rabbitmq_prometheus"][..],
    ] {
        let mut args = vec!["enable"];
        args.extend_from_slice(plugins);
        let o = tools.run("rabbitmq-plugins", Some("absent"), &args);
        assert_eq!(o.status.code(), Some(0), "{plugins:?}: {}", err(&o));
    }
    let o = tools.run(
        "rabbitmq-plugins",
        Some("absent"),
        &["disable", "rabbitmq_auth_mechanism_ssl"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}
