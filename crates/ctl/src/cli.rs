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
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ctl => "rabbitmqctl",
            Tool::Diagnostics => "rabbitmq-diagnostics",
            Tool::Plugins => "rabbitmq-plugins",
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
        return plugins(&inv);
    }
    // rabbitmq-diagnostics names some checks differently.
    if tool == Tool::Diagnostics && inv.request.command == "check_virtual_hosts" {
        inv.request.command = "ping".into();
    }
    let node = crate::node::resolve(inv.node.as_deref());
    // import_definitions reads the file here and sends its text.
    if inv.request.command == "import_definitions" {
        let Some(path) = inv.request.args.first().cloned() else {
            eprintln!("Error (argument validation): not enough arguments: <path>");
            return exit::USAGE;
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
            eprintln!("Error: unable to perform an operation on node '{node}'. Please see diagnostics information and suggestions below.\n\nMost common reasons for this are:\n\n * Target node is unreachable (e.g. due to hostname resolution, TCP connection or firewall issues)\n * Target node is not running\n\nDIAGNOSTICS\n===========\n\nattempted to contact: [{node}] (control socket {})", crate::node::socket_path(&node).display());
            return exit::UNAVAILABLE;
        }
        Ok(Ok(r)) => r,
    };
    // The banner comes once the node answered (none when it is down), and not for an
    // argument error, as rabbitmqctl validates those before it starts.
    let argument_error = reply.code == exit::USAGE
        && (reply.message.starts_with("Info key(s)")
            || reply.message.starts_with("Command '")
            || reply.message.starts_with("not enough arguments")
            || reply.message == crate::server::APP_RUNNING);
    // (--formatter json prints the JSON alone.)
    if !inv.quiet && !inv.json && !argument_error {
        if let Some(banner) = banner(&inv.request, &node) {
            println!("{banner}");
        }
    }
    render(&inv, &node, reply)
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
        "delete_vhost" => format!("Deleting vhost \"{}\" ...", a(0)),
        "set_permissions" => format!("Setting permissions for user \"{}\" in vhost \"{vhost}\" ...", a(0)),
        "clear_permissions" => format!("Clearing permissions for user \"{}\" in vhost \"{vhost}\" ...", a(0)),
        "set_topic_permissions" => format!("Setting topic permissions on \"{}\" for user \"{}\" in vhost \"{vhost}\" ...", a(1), a(0)),
        "set_policy" => format!("Setting policy \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{vhost}\" ...", a(0), a(1), a(2),
            req.options.get("priority").and_then(Value::as_str).unwrap_or("0")),
        "clear_policy" => format!("Clearing policy \"{}\" on vhost \"{vhost}\" ...", a(0)),
        "set_operator_policy" => format!("Setting operator policy override \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{vhost}\" ...", a(0), a(1), a(2),
            req.options.get("priority").and_then(Value::as_str).unwrap_or("0")),
        "clear_operator_policy" => format!("Clearing operator policy \"{}\" on vhost \"{vhost}\" ...", a(0)),
        "set_vhost_limits" => format!("Setting vhost limits to \"{}\" for vhost \"{vhost}\" ...", a(0)),
        "set_user_limits" => format!("Setting user limits to \"{}\" for user \"{}\" ...", a(1), a(0)),
        "purge_queue" => format!("Purging queue '{}' in vhost '{vhost}' ...", a(0)),
        "delete_queue" => format!("Deleting queue '{}' on vhost '{vhost}' ...", a(0)),
        "close_connection" => format!("Closing connection {}, reason: {}...", a(0), a(1)),
        "close_all_connections" => format!("Closing all connections in vhost {vhost}, reason: {}...", a(0)),
        "set_vm_memory_high_watermark" => format!("Setting memory threshold on {node} to {} ...", req.args.join(" ")),
        "set_disk_free_limit" => format!("Setting disk free limit on {node} to {} bytes ...", req.args.join(" ")),
        "stop" => format!("Stopping and halting node {node} ..."),
        "stop_app" => format!("Stopping rabbit application on node {node} ..."),
        "trace_on" => format!("Starting tracing for vhost \"{vhost}\" ..."),
        "trace_off" => format!("Stopping tracing for vhost \"{vhost}\" ..."),
        "export_definitions" => format!("Exporting definitions in JSON to a file at \"{}\" ...", a(0)),
        "import_definitions" => format!("Importing definitions in JSON from a file at \"{}\" ...", a(0)),
        "start_app" => format!("Starting node {node} ..."),
        "reset" | "force_reset" => format!("Resetting node {node} ..."),
        "check_running" => format!("Checking if RabbitMQ is running on node {node} ..."),
        "check_local_alarms" => format!("Asking {node} to report any local resource alarms ..."),
        "check_alarms" => format!("Asking {node} to report any known resource alarms ..."),
        "check_port_connectivity" => format!("Testing TCP connections to all active listeners on node {node} ..."),
        "check_protocol_listener" => format!("Testing for protocol listener {} on node {node} ...", a(0)),
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
        } else if reply.code == exit::USAGE
            && (msg.starts_with("Info key(s)") || msg.starts_with("not enough arguments"))
        {
            let given: Vec<&str> = std::iter::once(inv.request.command.as_str())
                .chain(inv.request.args.iter().map(String::as_str))
                .collect();
            eprintln!(
                "Error (argument validation): {msg}\nArguments given:\n\t{}\n",
                given.join(" ")
            );
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
                let _ = writeln!(out, "{text}");
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
        "check_running" => format!("RabbitMQ on node {node} is fully booted and running"),
        "check_local_alarms" | "check_alarms" => "Node reported no alarms, local or clusterwide".to_string(),
        "check_port_connectivity" => "Successfully connected to ports".to_string(),
        "check_protocol_listener" => format!(
            "A listener for protocol {} is running",
            inv.request.args.first().cloned().unwrap_or_default()
        ),
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
        gb(num(&doc["memory"]["total"]["rss"]), 2),
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

fn render_rows(out: &mut impl Write, inv: &Invocation, reply: &Reply) {
    if inv.json {
        // rabbitmqctl --formatter json: one JSON array, an object per line.
        let _ = writeln!(out, "[");
        let n = reply.rows.len();
        for (i, r) in reply.rows.iter().enumerate() {
            let sep = if i + 1 < n { "," } else { "" };
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
            let _ = writeln!(out, "{{{}}}{sep}", fields.join(","));
        }
        let _ = writeln!(out, "]");
        return;
    }
    // No rows: nothing at all, not even the header (fixtures rely on it).
    if reply.rows.is_empty() {
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

/// The plugins Warren has built in, under RabbitMQ's names.
const BUILT_IN: &[(&str, &str)] = &[
    ("rabbitmq_management", "management HTTP API (/api)"),
    ("rabbitmq_management_agent", "part of the management API"),
    (
        "rabbitmq_web_dispatch",
        "HTTP listener of the management API",
    ),
    ("rabbitmq_prometheus", "Prometheus metrics (/metrics)"),
    (
        "rabbitmq_auth_mechanism_ssl",
        "SASL EXTERNAL with TLS client certificates",
    ),
];

/// `rabbitmq-plugins`: the built-in plugins are always enabled; enabling them succeeds,
/// and so do setup scripts that enable them.
fn plugins(inv: &Invocation) -> i32 {
    let req = &inv.request;
    let known = |p: &str| BUILT_IN.iter().any(|(n, _)| *n == p);
    match req.command.as_str() {
        "list" => {
            if !inv.quiet {
                println!("Listing plugins with pattern \".*\" ...");
                println!(" Configured: E = explicitly enabled; e = implicitly enabled");
                println!(
                    " | Status: * = running on {}",
                    crate::node::resolve(inv.node.as_deref())
                );
                println!(" |/");
            }
            for (name, _) in BUILT_IN {
                println!(
                    "[E*] {name:<34} {}",
                    warren_server::config::RABBITMQ_VERSION
                );
            }
            0
        }
        "enable" | "disable" => {
            let unknown: Vec<&String> = req
                .args
                .iter()
                .filter(|p| !known(p) && !req.options.contains_key("all"))
                .collect();
            if !unknown.is_empty() {
                let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                eprintln!(
                    "Error:\n{{:plugins_not_found, [{}]}}",
                    names
                        .iter()
                        .map(|n| format!(":{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return exit::DATAERR;
            }
            if req.command == "enable" {
                println!(
                    "Enabling plugins on node {}:",
                    crate::node::resolve(inv.node.as_deref())
                );
                for p in &req.args {
                    println!("{p}");
                }
                println!("The following plugins have been configured:");
                for (name, _) in BUILT_IN {
                    println!("  {name}");
                }
                println!(
                    "Applying plugin configuration to {}...",
                    crate::node::resolve(inv.node.as_deref())
                );
                println!("Plugin configuration unchanged.");
            } else {
                println!(
                    "Warren's plugins are built in and stay enabled: {}",
                    req.args.join(", ")
                );
            }
            0
        }
        "is_enabled" => {
            if req.args.iter().all(|p| known(p)) {
                if !inv.quiet {
                    println!("Plugins are enabled");
                }
                0
            } else {
                eprintln!(
                    "Error:\nPlugin(s) not enabled: {}",
                    req.args
                        .iter()
                        .filter(|p| !known(p))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                exit::UNAVAILABLE
            }
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
