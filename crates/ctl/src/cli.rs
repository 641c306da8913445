//! The tools' side: `rabbitmqctl`, `rabbitmq-diagnostics` and `rabbitmq-plugins`, with
//! rabbitmqctl 3.x's options, output and exit codes. Each run sends one request to the
//! node's control socket and renders the reply.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::{exit, Reply, Request};

/// Which tool is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `rabbitmqctl` (or `warren ctl`).
    Ctl,
    /// `rabbitmq-diagnostics`.
    Diagnostics,
    /// `rabbitmq-plugins`.
    Plugins,
    /// `rabbitmq-streams`.
    Streams,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ctl => "rabbitmqctl",
            Tool::Diagnostics => "rabbitmq-diagnostics",
            Tool::Plugins => "rabbitmq-plugins",
            Tool::Streams => "rabbitmq-streams",
        }
    }
}

/// Parsed global and command options.
#[derive(Debug, Default)]
struct Invocation {
    node: Option<String>,
    quiet: bool,
    silent: bool,
    json: bool,
    /// rabbitmq-streams' listings: its default `table` formatter (boxes).
    boxes: bool,
    timeout: Option<f64>,
    request: Request,
}

/// Options that take a value, per rabbitmqctl.
const VALUED: &[&str] = &[
    "node",
    "timeout",
    "vhost",
    "formatter",
    "priority",
    "apply-to",
    "description",
    "tags",
    "default-queue-type",
    "partitions",
    "routing-keys",
    "binding-keys",
    "max-length-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
    "leader-locator",
    "initial-cluster-size",
];

fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut inv = Invocation::default();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let value = |i: &mut usize| -> Result<String, String> {
            *i += 1;
            args.get(*i)
                .cloned()
                .ok_or_else(|| format!("option {a} needs a value"))
        };
        match a.as_str() {
            "-n" | "--node" => inv.node = Some(value(&mut i)?),
            "-p" | "--vhost" => inv.request.vhost = Some(value(&mut i)?),
            "-q" | "--quiet" => inv.quiet = true,
            "-s" | "--silent" => {
                inv.quiet = true;
                inv.silent = true;
            }
            "-t" | "--timeout" => {
                let v = value(&mut i)?;
                inv.timeout = Some(v.parse().map_err(|_| format!("invalid timeout '{v}'"))?);
            }
            "-l" | "--longnames" | "--no-table-headers" => {
                if a == "--no-table-headers" {
                    inv.silent = true;
                }
            }
            "--formatter" => inv.json = value(&mut i)? == "json",
            s if s.starts_with("--") && s.len() > 2 => {
                let (name, inline) = match s[2..].split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (s[2..].to_string(), None),
                };
                let v = match inline {
                    Some(v) => Value::String(v),
                    None if VALUED.contains(&name.as_str()) => Value::String(value(&mut i)?),
                    None => Value::Bool(true),
                };
                if name == "formatter" {
                    inv.json = v.as_str() == Some("json");
                } else if name == "vhost" {
                    inv.request.vhost = v.as_str().map(str::to_string);
                } else {
                    inv.request.options.insert(name, v);
                }
            }
            _ => positional.push(a.clone()),
        }
        i += 1;
    }
    let mut it = positional.into_iter();
    inv.request.command = it.next().unwrap_or_default();
    inv.request.args = it.collect();
    Ok(inv)
}

/// rabbitmqctl 3.10's commands: any other name is "not found" (64) before the node is
/// contacted, as in RabbitMQ (the health checks, `listeners` and `server_version` are
/// rabbitmq-diagnostics commands).
const CTL_COMMANDS: &str = "\
    autocomplete help version await_startup reset rotate_logs shutdown start_app \
    stop stop_app wait await_online_nodes change_cluster_node_type cluster_status \
    force_boot force_reset forget_cluster_node join_cluster rename_cluster_node \
    update_cluster_nodes cancel_sync_queue sync_queue add_user authenticate_user \
    change_password clear_password clear_user_limits delete_user list_user_limits \
    list_users set_user_limits set_user_tags clear_permissions \
    clear_topic_permissions list_permissions list_topic_permissions \
    list_user_permissions list_user_topic_permissions list_vhosts set_permissions \
    set_topic_permissions list_bindings list_channels list_ciphers list_connections \
    list_consumers list_exchanges list_hashes list_node_auth_attempt_stats \
    list_queues list_unresponsive_queues ping report schema_info status \
    clear_global_parameter clear_parameter list_global_parameters list_parameters \
    set_global_parameter set_parameter clear_operator_policy clear_policy \
    list_operator_policies list_policies set_operator_policy set_policy add_vhost \
    clear_vhost_limits delete_vhost list_vhost_limits restart_vhost set_vhost_limits \
    set_vhost_tags trace_off trace_on decode encode environment set_cluster_name \
    set_disk_free_limit set_log_level set_vm_memory_high_watermark \
    export_definitions import_definitions enable_feature_flag list_feature_flags \
    close_all_connections close_all_user_connections close_connection eval eval_file \
    exec force_gc resume_listeners suspend_listeners delete_queue purge_queue \
    hipe_compile node_health_check";

/// rabbitmq-diagnostics 3.10's commands (`await_startup` is rabbitmqctl's only).
const DIAGNOSTICS_COMMANDS: &str = "\
    autocomplete help version wait cluster_status list_user_limits list_users \
    list_permissions list_topic_permissions list_user_permissions \
    list_user_topic_permissions list_vhosts alarms check_alarms \
    check_certificate_expiration check_if_node_is_mirror_sync_critical \
    check_if_node_is_quorum_critical check_local_alarms check_port_connectivity \
    check_port_listener check_protocol_listener check_running check_virtual_hosts \
    cipher_suites consume_event_stream discover_peers erlang_version is_booting \
    is_running list_bindings list_channels list_ciphers list_connections \
    list_consumers list_exchanges list_hashes list_network_interfaces \
    list_node_auth_attempt_stats list_queues list_unresponsive_queues listeners \
    log_tail log_tail_stream maybe_stuck memory_breakdown observer ping \
    quorum_status remote_shell report runtime_thread_stats schema_info \
    server_version status stream_status tls_versions list_global_parameters \
    list_parameters list_operator_policies list_policies list_vhost_limits \
    certificates command_line_arguments disable_auth_attempt_source_tracking \
    enable_auth_attempt_source_tracking environment erlang_cookie_hash \
    erlang_cookie_sources log_location os_env reset_node_auth_attempt_metrics \
    resolve_hostname resolver_info list_feature_flags reclaim_quorum_memory \
    node_health_check";

/// rabbitmq-streams' commands that Warren has (3.10's, less replicas, `stream_status`
/// and the retention policy command).
const STREAMS_COMMANDS: &str = "autocomplete help version add_super_stream delete_super_stream \
    list_stream_connections list_stream_consumers list_stream_publishers";

/// Messages of argument errors: rabbitmqctl prints them without the banner, as
/// "Error (argument validation): ..." followed by the arguments given.
fn is_argument_error(reply: &Reply) -> bool {
    let m = &reply.message;
    (reply.code == exit::USAGE || reply.code == exit::DATAERR)
        && (m.starts_with("Info key(s)")
            || m.starts_with("not enough arguments")
            || m.starts_with("too many arguments")
            || m.starts_with("Bad argument"))
}

/// Prints an argument error as rabbitmqctl does; returns `code`.
fn argument_error(req: &Request, code: i32, msg: &str) -> i32 {
    let given: Vec<&str> = std::iter::once(req.command.as_str())
        .chain(req.args.iter().map(String::as_str))
        .collect();
    eprintln!(
        "Error (argument validation): {msg}\nArguments given:\n\t{}\n",
        given.join(" ")
    );
    code
}

/// Checks made on the tool's side before the node is contacted, as rabbitmqctl's
/// validation: the paths of `export_definitions` and `import_definitions`.
fn validate(req: &Request) -> Result<(), (i32, String)> {
    let path = || req.args.first().map(String::as_str);
    let count = |min: usize, max: usize| {
        if req.args.len() < min {
            Err((exit::USAGE, "not enough arguments.".to_string()))
        } else if req.args.len() > max {
            Err((exit::USAGE, "too many arguments.".to_string()))
        } else {
            Ok(())
        }
    };
    match req.command.as_str() {
        "export_definitions" => {
            count(1, 1)?;
            match path() {
                Some(p) if p != "-" => {
                    let dir = std::path::Path::new(p)
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    if !dir.is_dir() {
                        return Err((
                            exit::DATAERR,
                            format!("Bad argument: Directory {} does not exist", dir.display()),
                        ));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        "add_super_stream" => {
            count(1, 1)?;
            crate::streams::validate(&req.options).map_err(|m| (exit::USAGE, m))
        }
        "delete_super_stream" => count(1, 1),
        "import_definitions" => {
            count(1, 1)?;
            match path() {
                Some(p) if p != "-" && !std::path::Path::new(p).is_file() => Err((
                    exit::DATAERR,
                    format!("Bad argument: File {p} does not exist"),
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Runs a tool with its arguments (without the program name); returns the exit code.
pub async fn run(tool: Tool, args: &[String]) -> i32 {
    let mut inv = match parse(args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("Error (argument validation): {e}");
            return exit::USAGE;
        }
    };
    if inv.request.command.is_empty() || inv.request.command == "help" {
        usage(tool);
        return exit::USAGE;
    }
    if tool == Tool::Plugins {
        return plugins(&inv).await;
    }
    let known = match tool {
        Tool::Diagnostics => DIAGNOSTICS_COMMANDS,
        Tool::Streams => STREAMS_COMMANDS,
        _ => CTL_COMMANDS,
    };
    if !known.split_whitespace().any(|c| c == inv.request.command) {
        eprintln!("\nCommand '{}' not found. \n", inv.request.command);
        return exit::USAGE;
    }
    // rabbitmq-diagnostics names some checks differently.
    if tool == Tool::Diagnostics && inv.request.command == "check_virtual_hosts" {
        inv.request.command = "ping".into();
    }
    if let Err((code, msg)) = validate(&inv.request) {
        return argument_error(&inv.request, code, &msg);
    }
    inv.boxes =
        tool == Tool::Streams && inv.request.command.starts_with("list_stream_") && !inv.json;
    let node = crate::node::resolve(inv.node.as_deref());
    let mut banner_shown = false;
    // add_user and change_password without a password read it from standard input,
    // after the banner and a prompt, as rabbitmqctl does.
    if matches!(inv.request.command.as_str(), "add_user" | "change_password")
        && inv.request.args.len() == 1
    {
        if !inv.quiet {
            if let Some(b) = banner(&inv.request, &node) {
                println!("{b}");
            }
            println!("Password: ");
            banner_shown = true;
        }
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let password = line.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            eprintln!("Error:\nPassword is not provided via argument or stdin");
            return exit::DATAERR;
        }
        inv.request.args.push(password.to_string());
    }
    // import_definitions reads the file here and sends its text.
    if inv.request.command == "import_definitions" {
        let Some(path) = inv.request.args.first().cloned() else {
            return argument_error(&inv.request, exit::USAGE, "not enough arguments.");
        };
        let text = if path == "-" {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
            s
        } else {
            match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("Error:\n{{:failed_to_read_file, \"{path}\", {e}}}");
                    return exit::DATAERR;
                }
            }
        };
        inv.request
            .options
            .insert("document".into(), Value::String(text));
    }
    let timeout = Duration::from_secs_f64(inv.timeout.unwrap_or(60.0).max(0.001));
    let reply = match tokio::time::timeout(timeout, call(&node, &inv.request)).await {
        Err(_) => {
            eprintln!(
                "Error: operation {} on node {node} timed out. Timeout value used: {}",
                inv.request.command,
                timeout.as_millis()
            );
            return exit::TEMPFAIL;
        }
        Ok(Err(_)) => {
            if inv.request.command == "await_startup" {
                return await_startup(&node, &inv.request, timeout).await;
            }
            unavailable(&node);
            return exit::UNAVAILABLE;
        }
        Ok(Ok(r)) => r,
    };
    // The banner comes once the node answered (none when it is down), and not for an
    // argument error, as rabbitmqctl validates those before it starts.
    let refused_arguments = is_argument_error(&reply)
        || reply.code == exit::USAGE
            && (reply.message.starts_with("Command '")
                || reply.message == crate::server::APP_RUNNING);
    // (--formatter json prints the JSON alone.)
    if !inv.quiet && !inv.json && !refused_arguments && !banner_shown {
        if let Some(banner) = banner(&inv.request, &node) {
            println!("{banner}");
        }
    }
    render(&inv, &node, reply)
}

/// rabbitmqctl's message for a node it cannot reach.
fn unavailable(node: &str) {
    eprintln!("Error: unable to perform an operation on node '{node}'. Please see diagnostics information and suggestions below.\n\nMost common reasons for this are:\n\n * Target node is unreachable (e.g. due to hostname resolution, TCP connection or firewall issues)\n * Target node is not running\n\nDIAGNOSTICS\n===========\n\nattempted to contact: [{node}] (control socket {})", crate::node::socket_path(node).display());
}

/// Waits for the node's control socket to answer (it opens once the node is up).
async fn await_startup(node: &str, req: &Request, timeout: Duration) -> i32 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if call(node, req).await.is_ok() {
            return 0;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "Error: node {node} did not start within {} ms",
                timeout.as_millis()
            );
            return exit::TEMPFAIL;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(node: &str, req: &Request) -> std::io::Result<Reply> {
    let stream = UnixStream::connect(crate::node::socket_path(node)).await?;
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(rd).read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// rabbitmqctl's informational first line, dropped by `-q`.
fn banner(req: &Request, node: &str) -> Option<String> {
    let vhost = req.vhost.as_deref().unwrap_or("/");
    let a = |i: usize| req.args.get(i).cloned().unwrap_or_default();
    Some(match req.command.as_str() {
        "list_queues" => format!("Timeout: 60.0 seconds ...\nListing queues for vhost {vhost} ..."),
        "list_exchanges" => format!("Listing exchanges for vhost {vhost} ..."),
        "list_bindings" => format!("Listing bindings for vhost {vhost}..."),
        "list_connections" => "Listing connections ...".into(),
        "list_channels" => "Listing channels ...".into(),
        "list_consumers" => format!("Listing consumers in vhost {vhost} ..."),
        "list_users" => "Listing users ...".into(),
        "list_vhosts" => "Listing vhosts ...".into(),
        "list_permissions" => format!("Listing permissions for vhost \"{vhost}\" ..."),
        "list_user_permissions" => format!("Listing permissions for user \"{}\" ...", a(0)),
        "list_topic_permissions" => format!("Listing topic permissions for vhost \"{vhost}\" ..."),
        "list_policies" => format!("Listing policies for vhost \"{vhost}\" ..."),
        "list_operator_policies" => format!("Listing operator policy overrides for vhost \"{vhost}\" ..."),
        "ping" => format!("Will ping {node}. This only checks if the OS process is running and registered with epmd. Timeout: 60000 ms."),
        "status" => format!("Status of node {node} ..."),
        "add_user" => format!("Adding user \"{}\" ...", a(0)),
        "delete_user" => format!("Deleting user \"{}\" ...", a(0)),
        "change_password" => format!("Changing password for user \"{}\" ...", a(0)),
        "clear_password" => format!("Clearing password for user \"{}\" ...", a(0)),
        "authenticate_user" => format!("Authenticating user \"{}\" ...", a(0)),
        "set_user_tags" => format!("Setting tags for user \"{}\" to [{}] ...", a(0), req.args.get(1..).unwrap_or(&[]).join(", ")),
        "add_vhost" => format!("Adding vhost \"{}\" ...", a(0)),
        "add_super_stream" => "Adding a super stream (experimental feature)...".into(),
        "list_stream_connections" => "Listing stream connections ...".into(),
        "list_stream_consumers" => "Listing stream consumers ...".into(),
        "list_stream_publishers" => "Listing stream publishers ...".into(),
        "delete_super_stream" => "Deleting a super stream (experimental feature)...".into(),
        "delete_vhost" => format!("Deleting vhost \"{}\" ...", a(0)),
        "set_permissions" => format!("Setting permissions for user \"{}\" in vhost \"{vhost}\" ...", a(0)),
        "clear_permissions" => format!("Clearing permissions for user \"{}\" in vhost \"{vhost}\" ...", a(0)),
        "set_topic_permissions" => format!("Setting topic permissions on \"{}\" for user \"{}\" in vhost \"{vhost}\" ...", a(1), a(0)),
        "clear_topic_permissions" if req.args.len() > 1 => format!("Clearing topic permissions on \"{}\" for user \"{}\" in vhost \"{vhost}\" ...", a(1), a(0)),
        "clear_topic_permissions" => format!("Clearing topic permissions for user \"{}\" in vhost \"{vhost}\" ...", a(0)),
        "set_policy" => format!("Setting policy \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{vhost}\" ...", a(0), a(1), a(2),
            req.options.get("priority").and_then(Value::as_str).unwrap_or("0")),
        "clear_policy" => format!("Clearing policy \"{}\" on vhost \"{vhost}\" ...", a(0)),
        "set_operator_policy" => format!("Setting operator policy override \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{vhost}\" ...", a(0), a(1), a(2),
            req.options.get("priority").and_then(Value::as_str).unwrap_or("0")),
        "clear_operator_policy" => format!("Clearing operator policy \"{}\" on vhost \"{vhost}\" ...", a(0)),
        "set_vhost_limits" => format!("Setting vhost limits to \"{}\" for vhost \"{vhost}\" ...", a(0)),
        "clear_vhost_limits" => format!("Clearing vhost \"{vhost}\" limits ..."),
        "set_user_limits" => format!("Setting user limits to \"{}\" for user \"{}\" ...", a(1), a(0)),
        "clear_user_limits" if a(1) == "all" => format!("Clearing all limits for user \"{}\" ...", a(0)),
        "clear_user_limits" => format!("Clearing \"{}\" limit for user \"{}\" ...", a(1), a(0)),
        "purge_queue" => format!("Purging queue '{}' in vhost '{vhost}' ...", a(0)),
        "delete_queue" => {
            let flag = |n: &str| req.options.get(n).is_some_and(|v| v.as_bool().unwrap_or(true));
            let conditions: Vec<&str> = [("if-empty", " if queue is empty"), ("if-unused", " if queue is unused")]
                .iter()
                .filter(|(o, _)| flag(o))
                .map(|(_, t)| *t)
                .collect();
            format!("Deleting queue '{}' on vhost '{vhost}'{} ...", a(0), conditions.join(" and"))
        }
        "close_connection" => format!("Closing connection {}, reason: {}...", a(0), a(1)),
        "close_all_connections" if req.options.contains_key("global") => format!("Closing all connections to node {node} (across all vhosts), reason: {}...", a(0)),
        "close_all_connections" => format!("Closing all connections in vhost {vhost}, reason: {}...", a(0)),
        "set_vm_memory_high_watermark" if a(0) == "absolute" => format!("Setting memory threshold on {node} to {} bytes ...", a(1)),
        "set_vm_memory_high_watermark" => format!("Setting memory threshold on {node} to {} ...", a(0)),
        "set_disk_free_limit" if a(0) == "mem_relative" => format!("Setting disk free limit on {node} to {} times the total RAM ...", a(1)),
        "set_disk_free_limit" => format!("Setting disk free limit on {node} to {} bytes ...", a(0)),
        "stop" => format!("Stopping and halting node {node} ..."),
        "stop_app" => format!("Stopping rabbit application on node {node} ..."),
        "trace_on" => format!("Starting tracing for vhost \"{vhost}\" ..."),
        "trace_off" => format!("Stopping tracing for vhost \"{vhost}\" ..."),
        // Definitions written to standard output come alone.
        "export_definitions" if a(0) == "-" => return None,
        "export_definitions" => format!("Exporting definitions in JSON to a file at \"{}\" ...", a(0)),
        "import_definitions" => format!("Importing definitions in JSON from a file at \"{}\" ...", a(0)),
        "start_app" => format!("Starting node {node} ..."),
        "reset" | "force_reset" => format!("Resetting node {node} ..."),
        "check_running" => format!("Checking if RabbitMQ is running on node {node} ..."),
        // (3.10's check_alarms has check_local_alarms' banner.)
        "check_local_alarms" | "check_alarms" => format!("Asking node {node} to report any local resource alarms ..."),
        "check_port_connectivity" => format!("Testing TCP connections to all active listeners on node {node} ..."),
        "check_protocol_listener" => format!("Asking node {node} if there's an active listener for protocol {} ...", a(0)),
        "server_version" => format!("Asking node {node} for its RabbitMQ version..."),
        "listeners" => format!("Asking node {node} to report its protocol listeners ..."),
        _ => return None,
    })
}

/// Prints the reply as rabbitmqctl would; returns the exit code.
fn render(inv: &Invocation, node: &str, reply: Reply) -> i32 {
    let out = std::io::stdout();
    let mut out = out.lock();
    if reply.code != 0 {
        let msg = &reply.message;
        if reply.code == exit::USAGE && msg.starts_with("Command '") {
            eprintln!("\n{msg} \n");
        } else if reply.code == exit::USAGE && msg == crate::server::APP_RUNNING {
            eprintln!(
                "Error: {msg}\nArguments given:\n\t{}\n",
                inv.request.command
            );
        } else if is_argument_error(&reply) {
            argument_error(&inv.request, reply.code, msg);
        } else if inv.request.command == "delete_vhost"
            || msg.starts_with("Virtual host '") && msg.ends_with("' does not exist")
        {
            eprintln!("{msg}");
        } else {
            eprintln!("Error:\n{msg}");
        }
        return reply.code;
    }
    if let Some(doc) = &reply.document {
        if inv.request.command == "export_definitions" {
            let path = inv.request.args.first().map(String::as_str).unwrap_or("-");
            let text = serde_json::to_string(doc).unwrap_or_default();
            if path == "-" {
                // rabbitmqctl prints the document without a line end.
                let _ = write!(out, "{text}");
            } else if let Err(e) = std::fs::write(path, text) {
                eprintln!("Error:\n{{:failed_to_write_file, \"{path}\", {e}}}");
                return exit::DATAERR;
            }
            return 0;
        }
        let _ = writeln!(out, "{}", render_document(inv, node, doc));
        return 0;
    }
    if !reply.columns.is_empty() {
        render_rows(&mut out, inv, &reply);
        return 0;
    }
    if !reply.rows.is_empty() {
        // listeners: one line per row.
        for r in &reply.rows {
            let s = |k: &str| r.get(k).map(cell).unwrap_or_default();
            let _ = writeln!(
                out,
                "Interface: {}, port: {}, protocol: {}, purpose: {}",
                s("interface"),
                s("port"),
                s("protocol"),
                s("purpose")
            );
        }
        return 0;
    }
    let message = match inv.request.command.as_str() {
        "ping" => "Ping succeeded".to_string(),
        "add_user" if !inv.quiet => "Done. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl help set_permissions' to learn more.".to_string(),
        "import_definitions" if !inv.quiet => "Successfully started definition import. This process is asynchronous and can take some time.".to_string(),
        "check_running" => format!("RabbitMQ on node {node} is fully booted and running"),
        _ => reply.message.clone(),
    };
    let suppressed = inv.silent && inv.request.command != "ping";
    if !message.is_empty() && !suppressed {
        let _ = writeln!(out, "{message}");
    }
    0
}

fn render_document(inv: &Invocation, node: &str, doc: &Value) -> String {
    if inv.json {
        return doc.to_string();
    }
    // rabbitmqctl status: bold section titles (also when not on a terminal, as
    // rabbitmqctl does), sizes in gigabytes as it rounds them.
    let title = |t: &str| format!("\u{1b}[1m{t}\u{1b}[0m\n\n");
    let get = |k: &str| doc.get(k).map(cell).unwrap_or_default();
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let list = |v: &Value| -> String {
        v.as_array()
            .map(|a| a.iter().map(|x| format!(" * {}\n", cell(x))).collect())
            .unwrap_or_default()
    };
    let mut o = String::new();
    o += &title("Runtime");
    o += &format!(
        "OS PID: {}\nOS: {}\nUptime (seconds): {}\nIs under maintenance?: false\nRabbitMQ version: {}\nNode name: {node}\nProduct name: {}\nProduct version: {}\n\n",
        get("pid"),
        get("os"),
        get("uptime"),
        get("rabbitmq_version"),
        get("product_name"),
        get("product_version"),
    );
    o += &title("Plugins");
    o += &format!("Enabled plugins:\n\n{}\n", list(&doc["active_plugins"]));
    o += &title("Data directory");
    o += &format!("Node data directory: {}\n\n", get("data_directory"));
    o += &title("Config files");
    o += "\n";
    o += &title("Log file(s)");
    o += &format!("{}\n", list(&doc["log_files"]));
    o += &title("Alarms");
    let alarms: Vec<String> = doc["alarms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let r = cell(&x["resource"]);
                    let r = if r == "disk" {
                        "Free disk space".to_string()
                    } else {
                        let mut c = r.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect())
                            .unwrap_or_default()
                    };
                    format!("{r} alarm on node {node}")
                })
                .collect()
        })
        .unwrap_or_default();
    o += &format!(
        "{}\n\n",
        if alarms.is_empty() {
            "(none)".to_string()
        } else {
            alarms.join("\n")
        }
    );
    o += &title("Memory");
    let setting = match doc["vm_memory_high_watermark_setting"].get("relative") {
        Some(r) => format!("{} of available memory", cell(r)),
        None => format!(
            "{} bytes",
            cell(&doc["vm_memory_high_watermark_setting"]["absolute"])
        ),
    };
    o += &format!(
        "Total memory used: {} gb\nCalculation strategy: rss\nMemory high watermark setting: {setting}, computed to: {} gb\n\n",
        gb(num(&doc["memory"]["total"]["rss"]), 4),
        gb(num(&doc["vm_memory_high_watermark_limit"]), 4),
    );
    o += &title("File Descriptors");
    let fd = &doc["file_descriptors"];
    o += &format!(
        "Total: {}, limit: {}\nSockets: {}, limit: {}\n\n",
        fd["total_used"], fd["total_limit"], fd["sockets_used"], fd["sockets_limit"]
    );
    o += &title("Free Disk Space");
    o += &format!(
        "Low free disk space watermark: {} gb\nFree disk space: {} gb\n\n",
        gb(num(&doc["disk_free_limit"]), 4),
        gb(num(&doc["disk_free"]), 4)
    );
    o += &title("Totals");
    let t = &doc["totals"];
    o += &format!(
        "Connection count: {}\nQueue count: {}\nVirtual host count: {}\n\n",
        t["connection_count"], t["queue_count"], t["virtual_host_count"]
    );
    o += &title("Listeners");
    let ls: Vec<String> = doc["listeners"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    format!(
                        "Interface: {}, port: {}, protocol: {}, purpose: {}",
                        cell(&l["interface"]),
                        l["port"],
                        cell(&l["protocol"]),
                        cell(&l["purpose"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    o += &ls.join("\n");
    o
}

/// Bytes as rabbitmqctl's status prints them: gigabytes rounded to `places` decimals.
fn gb(bytes: f64, places: i32) -> String {
    let scale = 10f64.powi(places);
    let v = (bytes / 1e9 * scale).round() / scale;
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Commands whose rows RabbitMQ computes at once rather than streams: with no rows they
/// print an empty line (`[]` in JSON) where streamed lists print nothing.
const NOT_STREAMED: &[&str] = &[
    "list_permissions",
    "list_user_permissions",
    "list_topic_permissions",
    "list_policies",
    "list_operator_policies",
];

fn render_rows(out: &mut impl Write, inv: &Invocation, reply: &Reply) {
    let streamed = !NOT_STREAMED.contains(&inv.request.command.as_str());
    if reply.rows.is_empty() && !streamed {
        let _ = writeln!(out, "{}", if inv.json { "[]" } else { "" });
        return;
    }
    if inv.json {
        // rabbitmqctl --formatter json: one JSON array, an object per line, each after
        // the first led by its comma.
        let _ = writeln!(out, "[");
        for (i, r) in reply.rows.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            // Keys in column order, as rabbitmqctl prints them.
            let fields: Vec<String> = reply
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "{}:{}",
                        Value::String(c.clone()),
                        r.get(c).unwrap_or(&Value::Null)
                    )
                })
                .collect();
            let _ = writeln!(out, "{sep}{{{}}}", fields.join(","));
        }
        let _ = writeln!(out, "]");
        return;
    }
    // No rows: nothing at all, not even the header (fixtures rely on it).
    if reply.rows.is_empty() {
        return;
    }
    if inv.boxes {
        render_boxes(out, reply);
        return;
    }
    if !inv.silent {
        let _ = writeln!(out, "{}", reply.columns.join("\t"));
    }
    for r in &reply.rows {
        let cells: Vec<String> = reply
            .columns
            .iter()
            .map(|c| r.get(c).map(cell).unwrap_or_default())
            .collect();
        let _ = writeln!(out, "{}", cells.join("\t"));
    }
}

/// rabbitmq-streams' `table` formatter: a box of DEC line-drawing characters around a
/// bold header and each row, columns as wide as their widest cell.
fn render_boxes(out: &mut impl Write, reply: &Reply) {
    let rows: Vec<Vec<String>> = reply
        .rows
        .iter()
        .map(|r| {
            reply
                .columns
                .iter()
                .map(|c| r.get(c).map(erlang_cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = reply
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Line drawing: l w k (top), t n u (between), m v j (bottom), q across, x down.
    let rule = |left: char, mid: char, right: char| {
        let parts: Vec<String> = widths.iter().map(|w| "q".repeat(w + 2)).collect();
        format!("\x1b(0{left}{}{right}\x1b(B", parts.join(&mid.to_string()))
    };
    let line = |cells: &[String], bold: bool| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            let pad = " ".repeat(w - cell.chars().count());
            if bold {
                l.push_str(&format!("\x1b(0x\x1b(B \x1b[1m{cell}\x1b[0m{pad} "));
            } else {
                l.push_str(&format!("\x1b(0x\x1b(B {cell}{pad} "));
            }
        }
        l.push_str("\x1b(0x\x1b(B");
        l
    };
    let _ = writeln!(out, "{}", rule('l', 'w', 'k'));
    let _ = writeln!(out, "{}", line(&reply.columns, true));
    for r in &rows {
        let _ = writeln!(out, "{}", rule('t', 'n', 'u'));
        let _ = writeln!(out, "{}", line(r, false));
    }
    let _ = writeln!(out, "{}", rule('m', 'v', 'j'));
}

/// A cell of rabbitmq-streams' table: Erlang's printing of the value (`<<"binary">>`
/// strings inside terms, `#{}` maps, `{name,type,value}` property triples).
fn erlang_cell(v: &Value) -> String {
    fn inner(v: &Value) -> String {
        match v {
            Value::String(s) => format!("<<{s:?}>>"),
            Value::Array(a) => format!("[{}]", a.iter().map(inner).collect::<Vec<_>>().join(",")),
            Value::Object(m) => map(m),
            other => cell(other),
        }
    }
    fn map(m: &serde_json::Map<String, Value>) -> String {
        let pairs: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("<<{k:?}>> => {}", inner(v)))
            .collect();
        format!("#{{{}}}", pairs.join(","))
    }
    match v {
        Value::String(s) => s.strip_prefix("#PID").unwrap_or(s).to_string(),
        // Client properties: `{<<"name">>,type,value}` one after the other.
        Value::Array(a) => a
            .iter()
            .map(|t| match t.as_array().map(Vec::as_slice) {
                Some([k, kind, value]) => format!(
                    "{{{},{},{}}}",
                    inner(k),
                    kind.as_str().unwrap_or_default(),
                    inner(value)
                ),
                _ => inner(t),
            })
            .collect(),
        Value::Object(m) => map(m),
        other => cell(other),
    }
}

/// A value as rabbitmqctl prints it in a table cell: strings bare, lists of names as
/// `[a, b]`, tables as Erlang proplists `[{"key",value}]`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let names: Vec<String> = items.iter().map(cell).collect();
            format!("[{}]", names.join(", "))
        }
        other => term(other),
    }
}

/// Erlang term rendering of a value inside a table.
fn term(v: &Value) -> String {
    match v {
        Value::Null => "undefined".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("[{}]", a.iter().map(term).collect::<Vec<_>>().join(",")),
        Value::Object(m) => format!(
            "[{}]",
            m.iter()
                .map(|(k, v)| format!("{{{k:?},{}}}", term(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The plugins Warren has built in, under RabbitMQ's names, with their dependencies.
const BUILT_IN: &[(&str, &[&str])] = &[
    ("rabbitmq_auth_mechanism_ssl", &[]),
    (
        "rabbitmq_management",
        &["rabbitmq_management_agent", "rabbitmq_web_dispatch"],
    ),
    ("rabbitmq_management_agent", &[]),
    (
        "rabbitmq_prometheus",
        &["rabbitmq_management_agent", "rabbitmq_web_dispatch"],
    ),
    ("rabbitmq_stream", &[]),
    ("rabbitmq_web_dispatch", &[]),
];

/// `plugins` with their dependencies, sorted.
fn with_dependencies(plugins: &[String]) -> Vec<String> {
    let mut all: Vec<String> = plugins.to_vec();
    for p in plugins {
        if let Some((_, deps)) = BUILT_IN.iter().find(|(n, _)| n == p) {
            all.extend(deps.iter().map(|d| d.to_string()));
        }
    }
    all.sort();
    all.dedup();
    all
}

/// The explicitly enabled plugins: RABBITMQ_ENABLED_PLUGINS_FILE's list (a missing file
/// is none), or, without the variable, what a Warren node then runs (management,
/// Prometheus and the stream protocol).
fn enabled_plugins() -> (Option<std::path::PathBuf>, Vec<String>) {
    match std::env::var_os("RABBITMQ_ENABLED_PLUGINS_FILE").filter(|f| !f.is_empty()) {
        Some(f) => {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let mut list = crate::conf::parse_enabled_plugins(&text);
            list.sort();
            list.dedup();
            (Some(f.into()), list)
        }
        None => (
            None,
            vec![
                "rabbitmq_management".into(),
                "rabbitmq_prometheus".into(),
                "rabbitmq_stream".into(),
            ],
        ),
    }
}

/// The plugins the node runs (`None` when it cannot be reached).
async fn running_plugins(node: &str) -> Option<Vec<String>> {
    let req = Request {
        command: "status".into(),
        ..Request::default()
    };
    let reply = tokio::time::timeout(Duration::from_secs(30), call(node, &req))
        .await
        .ok()?
        .ok()?;
    let mut list: Vec<String> = reply
        .document?
        .get("active_plugins")?
        .as_array()?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    list.sort();
    Some(list)
}

/// `rabbitmq-plugins`: Warren's plugins are built in; the enabled plugins file says
/// which ones a node starts (read at boot), as RabbitMQ's does.
async fn plugins(inv: &Invocation) -> i32 {
    let req = &inv.request;
    let node = crate::node::resolve(inv.node.as_deref());
    // Short flags (`list -e`) arrive as positional arguments.
    let mut flags = Vec::new();
    let mut args = Vec::new();
    for a in &req.args {
        match a.as_str() {
            "-e" | "-E" | "-m" | "-v" => flags.push(a.as_str()),
            _ => args.push(a.clone()),
        }
    }
    let option = |long: &str, short: &str| {
        req.options.contains_key(long) || flags.iter().any(|f| f.strip_prefix('-') == Some(short))
    };
    match req.command.as_str() {
        "list" => {
            let pattern = args.first().cloned().unwrap_or_else(|| ".*".into());
            let Ok(re) = regex::Regex::new(&pattern) else {
                return argument_error(req, exit::DATAERR, "Bad argument: invalid pattern");
            };
            let (_, explicit) = enabled_plugins();
            let implicit = with_dependencies(&explicit);
            let running = running_plugins(&node).await;
            let only_explicit = option("enabled", "E");
            let only_enabled = option("implicitly-enabled", "e");
            let minimal = option("minimal", "m");
            let shown: Vec<&str> = BUILT_IN
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| re.is_match(n))
                .filter(|n| !only_explicit || explicit.iter().any(|e| e == n))
                .filter(|n| !only_enabled || implicit.iter().any(|e| e == n))
                .collect();
            if !inv.quiet {
                println!("Listing plugins with pattern \"{pattern}\" ...");
            }
            if !minimal && !inv.quiet {
                println!(" Configured: E = explicitly enabled; e = implicitly enabled");
                match &running {
                    Some(_) => println!(" | Status: * = running on {node}"),
                    None => println!(" | Status: [failed to contact {node} - status not shown]"),
                }
                println!(" |/");
            }
            let width = shown.iter().map(|n| n.len()).max().unwrap_or(0);
            for name in shown {
                if minimal {
                    println!("{name}");
                    continue;
                }
                let configured = if explicit.iter().any(|e| e == name) {
                    'E'
                } else if implicit.iter().any(|e| e == name) {
                    'e'
                } else {
                    ' '
                };
                let run = match &running {
                    Some(r) if r.iter().any(|p| p == name) => '*',
                    _ => ' ',
                };
                println!(
                    "[{configured}{run}] {name:<width$} {}",
                    warren_server::config::RABBITMQ_VERSION
                );
            }
            0
        }
        "enable" | "disable" => {
            let all = req.options.contains_key("all");
            if args.is_empty() && !all {
                return argument_error(req, exit::USAGE, "not enough arguments.");
            }
            if !args.is_empty() && all {
                return argument_error(
                    req,
                    exit::DATAERR,
                    "Bad argument: Cannot set both --all and a list of plugins",
                );
            }
            let enable = req.command == "enable";
            if !inv.quiet {
                match (enable, all) {
                    (true, true) => println!("Enabling ALL plugins on node {node}"),
                    (false, true) => println!("Disabling ALL plugins on node {node}"),
                    (true, false) => println!("Enabling plugins on node {node}:"),
                    (false, false) => println!("Disabling plugins on node {node}:"),
                }
                for p in &args {
                    println!("{p}");
                }
            }
            let known = |p: &str| BUILT_IN.iter().any(|(n, _)| *n == p);
            let named: Vec<String> = if all {
                BUILT_IN.iter().map(|(n, _)| n.to_string()).collect()
            } else {
                args.clone()
            };
            let unknown: Vec<&String> = named.iter().filter(|p| !known(p)).collect();
            if enable && !unknown.is_empty() {
                let names: Vec<String> = unknown.iter().map(|n| format!(":{n}")).collect();
                eprintln!("Error:\n{{:plugins_not_found, [{}]}}", names.join(", "));
                return exit::SOFTWARE;
            }
            let (file, explicit) = enabled_plugins();
            let before = with_dependencies(&explicit);
            let mut wanted = explicit.clone();
            if enable {
                // A plugin enabled only as a dependency stays implicit.
                for p in &named {
                    let implicit_only = before.contains(p) && !explicit.contains(p);
                    if !implicit_only && !wanted.contains(p) {
                        wanted.push(p.clone());
                    }
                }
            } else {
                // Disabling a plugin disables the ones that depend on it.
                let mut gone: Vec<String> = named.clone();
                for (n, deps) in BUILT_IN {
                    if deps.iter().any(|d| named.iter().any(|p| p == d)) {
                        gone.push(n.to_string());
                    }
                }
                wanted.retain(|p| !gone.contains(p));
            }
            wanted.sort();
            let after = with_dependencies(&wanted);
            if after.is_empty() {
                println!("All plugins have been disabled.");
            } else {
                println!("The following plugins have been configured:");
                for p in &after {
                    println!("  {p}");
                }
            }
            println!("Applying plugin configuration to {node}...");
            let changed: Vec<&String> = if enable {
                after.iter().filter(|p| !before.contains(p)).collect()
            } else {
                before.iter().filter(|p| !after.contains(p)).collect()
            };
            if changed.is_empty() {
                println!("Plugin configuration unchanged.");
                return 0;
            }
            // A node reads the file when it starts: the change is "offline", in
            // RabbitMQ's words.
            // Without RABBITMQ_ENABLED_PLUGINS_FILE there is no file to keep the list in
            // (a Warren node then runs its built-in plugins as configured): setup
            // scripts that enable plugins must not fail, so the change is reported only.
            if let Some(file) = file {
                let text = format!("[{}].\n", wanted.join(","));
                if let Err(e) = std::fs::write(&file, text) {
                    eprintln!(
                        "Error:\n{{:cannot_write_enabled_plugins_file, \"{}\", {e}}}",
                        file.display()
                    );
                    return exit::SOFTWARE;
                }
            }
            let verb = if enable { "enabled" } else { "disabled" };
            println!("The following plugins have been {verb}:");
            for p in &changed {
                println!("  {p}");
            }
            println!();
            if after.is_empty() {
                println!("nothing to do.");
            } else {
                println!("set {} plugins.", after.len());
            }
            println!("Offline change; changes will take effect at broker restart.");
            0
        }
        "is_enabled" => {
            if args.is_empty() {
                return argument_error(req, exit::USAGE, "not enough arguments.");
            }
            let (one, names) = (args.len() == 1, args.join(", "));
            if !inv.quiet {
                if one {
                    println!("Asking node {node} if plugin {names} is enabled...");
                } else {
                    println!("Asking node {node} if plugins {names} are enabled...");
                }
            }
            let Some(running) = running_plugins(&node).await else {
                unavailable(&node);
                return exit::UNAVAILABLE;
            };
            let missing: Vec<&String> = args.iter().filter(|p| !running.contains(p)).collect();
            if missing.is_empty() {
                if one {
                    println!("Plugin {names} is enabled on node {node}");
                } else {
                    println!("Plugins {names} are enabled on node {node}");
                }
                return 0;
            }
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            let subject = if list.len() == 1 {
                format!("Plugin {} is", list[0])
            } else {
                format!("Plugins {} are", list.join(", "))
            };
            eprintln!(
                "Error:\n{subject} not enabled on node {node}. Enabled plugins and dependencies: {}",
                running.join(", ")
            );
            exit::UNAVAILABLE
        }
        "directories" => {
            println!("Plugin archives directory: (built into Warren)");
            0
        }
        other => {
            eprintln!("\nCommand '{other}' not found. \n");
            exit::USAGE
        }
    }
}

fn usage(tool: Tool) {
    eprintln!(
        "\nUsage\n\n{} [--node <node>] [--timeout <timeout>] [--quiet] <command> [<command options>]\n\nWarren implements rabbitmqctl's commands; see docs/operations.md.",
        tool.name()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_render_as_rabbitmqctl_prints_them() {
        assert_eq!(
            cell(&serde_json::json!(["administrator", "monitoring"])),
            "[administrator, monitoring]"
        );
        assert_eq!(
            cell(&serde_json::json!({"x-max-length": 10})),
            "[{\"x-max-length\",10}]"
        );
        assert_eq!(
            cell(&serde_json::json!({"a": {"b": "c"}})),
            "[{\"a\",[{\"b\",\"c\"}]}]"
        );
        assert_eq!(cell(&serde_json::json!(true)), "true");
        assert_eq!(cell(&serde_json::json!([])), "[]");
    }

    #[test]
    fn options_are_read_anywhere() {
        let args: Vec<String> = [
            "-q",
            "list_queues",
            "-p",
            "v",
            "name",
            "--formatter",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let inv = parse(&args).unwrap();
        assert!(inv.quiet && inv.json);
        assert_eq!(inv.request.command, "list_queues");
        assert_eq!(inv.request.vhost.as_deref(), Some("v"));
        assert_eq!(inv.request.args, vec!["name".to_string()]);
    }
}
