//! `rabbitmqadmin`, the classic (v1) syntax, without Python: `list`, `show`, `declare`,
//! `delete`, `close`, `purge`, `publish`, `get`, `export`, `import` and `help` with
//! `name=value` arguments, the v1 options (`-H -P -u -p -V -f -q -s -k -t -S -R -d -c -N
//! -U --path-prefix --ssl-*`), `~/.rabbitmqadmin.conf`, and the v1 output formats, over
//! the management HTTP API. Its output and exit codes are those of the Python script
//! (checked side by side in `conformance/test_rabbitmqadmin.py`); where the script
//! crashes with a Python traceback (an empty name, a null cell) this one prints a clear
//! error or an empty cell instead.

pub mod format;
pub mod json;

use json::J;
use std::collections::HashMap;
use std::io::{Read, Write};

const PROG: &str = "rabbitmqadmin";

/// Where output goes; tests capture it.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub stdin: &'a mut dyn Read,
}

/// A finished run: the exit code (0, 1 for errors, 2 for bad options, as the v1 tool).
type Exit = i32;

/// An early end of the run, with what to print.
enum Stop {
    /// `ERROR: ...` and the `--help` hint on stderr, exit 1.
    Usage(String),
    /// `*** ...` on stderr, exit 1.
    Die(String),
    /// An option error as optparse prints it, exit 2.
    BadOption(String),
    /// Text already written: exit with this code.
    Done(Exit),
    /// A line on stderr as it is, exit 1.
    Plain(String),
}

type R<T> = Result<T, Stop>;

// ---------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Value,
    Int,
    Flag,
    /// `-q`: sets `verbose` to false.
    Quiet,
    Help,
}

struct Opt {
    short: Option<char>,
    long: &'static str,
    dest: &'static str,
    kind: Kind,
    metavar: &'static str,
    help: &'static str,
}

const fn opt(
    short: Option<char>,
    long: &'static str,
    dest: &'static str,
    kind: Kind,
    metavar: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        short,
        long,
        dest,
        kind,
        metavar,
        help,
    }
}

const OPTIONS: &[Opt] = &[
    opt(Some('h'), "help", "help", Kind::Help, "", "show this help message and exit"),
    opt(Some('c'), "config", "config", Kind::Value, "CONFIG", "configuration file [default: ~/.rabbitmqadmin.conf]"),
    opt(Some('N'), "node", "node", Kind::Value, "NODE", "node described in the configuration file [default: 'default' only if configuration file is specified]"),
    opt(Some('H'), "host", "hostname", Kind::Value, "HOST", "connect to host HOST [default: localhost]"),
    opt(Some('P'), "port", "port", Kind::Value, "PORT", "connect to port PORT [default: 15672]"),
    opt(None, "path-prefix", "path_prefix", Kind::Value, "PATH_PREFIX", "use specific URI path prefix for the RabbitMQ HTTP API. /api and operation path will be appended to it. (default: blank string) [default: ]"),
    opt(Some('V'), "vhost", "vhost", Kind::Value, "VHOST", "connect to vhost VHOST [default: all vhosts for list, '/' for declare]"),
    opt(Some('u'), "username", "username", Kind::Value, "USERNAME", "connect using username USERNAME [default: guest]"),
    opt(Some('p'), "password", "password", Kind::Value, "PASSWORD", "connect using password PASSWORD [default: guest]"),
    opt(Some('U'), "base-uri", "base_uri", Kind::Value, "URI", "connect using a base HTTP API URI. /api and operation path will be appended to it. Path will be ignored. --vhost has to be provided separately."),
    opt(Some('q'), "quiet", "verbose", Kind::Quiet, "", "suppress status messages [default: True]"),
    opt(Some('s'), "ssl", "ssl", Kind::Flag, "", "connect with ssl [default: False]"),
    opt(None, "ssl-key-file", "ssl_key_file", Kind::Value, "SSL_KEY_FILE", "PEM format key file for SSL"),
    opt(None, "ssl-cert-file", "ssl_cert_file", Kind::Value, "SSL_CERT_FILE", "PEM format certificate file for SSL"),
    opt(None, "ssl-ca-cert-file", "ssl_ca_cert_file", Kind::Value, "SSL_CA_CERT_FILE", "PEM format CA certificate file for SSL"),
    opt(None, "ssl-disable-hostname-verification", "ssl_disable_hostname_verification", Kind::Flag, "", "Disables peer hostname verification [default: False]"),
    opt(Some('k'), "ssl-insecure", "ssl_insecure", Kind::Flag, "", "Disables all SSL validations like curl's '-k' argument [default: False]"),
    opt(Some('t'), "request-timeout", "request_timeout", Kind::Int, "REQUEST_TIMEOUT", "HTTP request timeout in seconds [default: 120]"),
    opt(Some('f'), "format", "format", Kind::Value, "FORMAT", "format for listing commands - one of [raw_json, pretty_json, tsv, long, table, kvp, bash] [default: table]"),
    opt(Some('S'), "sort", "sort", Kind::Value, "SORT", "sort key for listing queries"),
    opt(Some('R'), "sort-reverse", "sort_reverse", Kind::Flag, "", "reverse the sort order"),
    opt(Some('d'), "depth", "depth", Kind::Value, "DEPTH", "maximum depth to recurse for listing tables [default: 1]"),
    opt(None, "bash-completion", "bash_completion", Kind::Flag, "", "Print bash completion script [default: False]"),
    opt(None, "version", "version", Kind::Flag, "", "Display version and exit"),
];

const DEFAULTS: &[(&str, &str)] = &[
    ("hostname", "localhost"),
    ("port", "15672"),
    ("node", "default"),
    ("path_prefix", ""),
    ("declare_vhost", "/"),
    ("username", "guest"),
    ("password", "guest"),
    ("ssl", "False"),
    ("ssl_insecure", "False"),
    ("ssl_disable_hostname_verification", "False"),
    ("request_timeout", "120"),
    ("verbose", "True"),
    ("format", "table"),
    ("depth", "1"),
    ("bash_completion", "False"),
];

/// The resolved options: the command line over the config file over the defaults.
struct Options {
    values: HashMap<String, String>,
}

impl Options {
    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
    fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }
    fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("True")
    }
    fn verbose(&self) -> bool {
        self.flag("verbose")
    }
}

fn find_long(name: &str) -> Result<&'static Opt, String> {
    if let Some(o) = OPTIONS.iter().find(|o| o.long == name) {
        return Ok(o);
    }
    let matches: Vec<&Opt> = OPTIONS
        .iter()
        .filter(|o| o.long.starts_with(name))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no such option: --{name}")),
        many => {
            let mut names: Vec<String> = many.iter().map(|o| format!("--{}", o.long)).collect();
            names.sort();
            Err(format!(
                "ambiguous option: --{name} ({}?)",
                names.join(", ")
            ))
        }
    }
}

fn opt_name(o: &Opt, used_short: bool) -> String {
    match (used_short, o.short) {
        (true, Some(c)) => format!("-{c}"),
        _ => format!("--{}", o.long),
    }
}

/// Parses the command line as optparse does (options anywhere, `--` ends them, long
/// options by unambiguous prefix, `-abc` clusters, `-Hhost` and `--host=host`).
fn parse_command_line(args: &[String]) -> R<(HashMap<String, String>, Vec<String>)> {
    let mut set: HashMap<String, String> = HashMap::new();
    let mut positional = Vec::new();
    let mut i = 0;
    let mut apply = |o: &Opt, used_short: bool, value: Option<String>| -> R<()> {
        match o.kind {
            Kind::Help => Err(Stop::Done(-1)),
            Kind::Flag => {
                set.insert(o.dest.into(), "True".into());
                Ok(())
            }
            Kind::Quiet => {
                set.insert(o.dest.into(), "False".into());
                Ok(())
            }
            Kind::Int => {
                let v = value.unwrap_or_default();
                if v.trim().parse::<i64>().is_err() {
                    return Err(Stop::BadOption(format!(
                        "option {}: invalid integer value: '{v}'",
                        opt_name(o, used_short)
                    )));
                }
                set.insert(o.dest.into(), v.trim().to_owned());
                Ok(())
            }
            Kind::Value => {
                set.insert(o.dest.into(), value.unwrap_or_default());
                Ok(())
            }
        }
    };
    let takes_value = |o: &Opt| matches!(o.kind, Kind::Value | Kind::Int);
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let o = find_long(name).map_err(Stop::BadOption)?;
            let value = if takes_value(o) {
                match inline {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => {
                        return Err(Stop::BadOption(format!(
                            "--{} option requires 1 argument",
                            o.long
                        )))
                    }
                }
            } else {
                if inline.is_some() {
                    return Err(Stop::BadOption(format!(
                        "--{} option does not take a value",
                        o.long
                    )));
                }
                None
            };
            apply(o, false, value)?;
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(o) = OPTIONS.iter().find(|o| o.short == Some(c)) else {
                    return Err(Stop::BadOption(format!("no such option: -{c}")));
                };
                if takes_value(o) {
                    let rest: String = chars[j..].iter().collect();
                    let value = if !rest.is_empty() {
                        rest
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(Stop::BadOption(format!("-{c} option requires 1 argument")));
                    };
                    apply(o, true, Some(value))?;
                    break;
                }
                apply(o, true, None)?;
            }
        } else {
            positional.push(a.clone());
        }
    }
    Ok((set, positional))
}

/// Reads one section of an INI file as Python's configparser does: `key = value` or
/// `key: value`, keys lower-cased, `#`/`;` comment lines, `[DEFAULT]` applying to all.
fn read_ini_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut current: Option<String> = None;
    let mut defaults = HashMap::new();
    let mut wanted: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            current = Some(name.to_owned());
            if name == section && wanted.is_none() {
                wanted = Some(HashMap::new());
            }
            continue;
        }
        let Some(pos) = trimmed.find(['=', ':']) else {
            continue;
        };
        let key = trimmed[..pos].trim().to_lowercase();
        let value = trimmed[pos + 1..].trim().to_owned();
        match current.as_deref() {
            Some("DEFAULT") => {
                defaults.insert(key, value);
            }
            Some(s) if s == section => {
                if let Some(w) = wanted.as_mut() {
                    w.insert(key, value);
                }
            }
            _ => {}
        }
    }
    wanted.map(|mut w| {
        for (k, v) in defaults {
            w.entry(k).or_insert(v);
        }
        w
    })
}

fn home_config() -> Option<String> {
    let home = std::env::var("USERPROFILE")
        .ok()
        .or_else(|| std::env::var("HOME").ok())?;
    let path = format!("{home}/.rabbitmqadmin.conf");
    std::path::Path::new(&path).is_file().then_some(path)
}

fn resolve_options(cli: HashMap<String, String>, err: &mut dyn Write) -> R<Options> {
    let mut values: HashMap<String, String> = DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = match cli.get("config") {
        Some(path) => {
            if !std::path::Path::new(path).is_file() {
                return Err(Stop::Usage(format!("Could not read config file '{path}'")));
            }
            Some(path.clone())
        }
        None => home_config(),
    };
    let node = cli.get("node").cloned().unwrap_or_else(|| "default".into());
    if let Some(path) = &config {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match read_ini_section(&text, &node) {
            Some(section) => {
                for (k, v) in section {
                    if !cli.contains_key(&k) {
                        values.insert(k, v);
                    }
                }
            }
            None if node == "default" => {}
            None => {
                return Err(Stop::Usage(format!(
                "Could not read section '{node}' in config file '{path}':\n   No section: '{node}'"
            )))
            }
        }
    }
    values.extend(cli);
    if let Some(base) = values.get("base_uri").cloned() {
        match url_parts(&base) {
            Some(u) => {
                for (k, v) in [
                    ("hostname", u.host),
                    ("port", u.port),
                    ("username", u.user),
                    ("password", u.pass),
                ] {
                    if let Some(v) = v {
                        values.insert(k.into(), v);
                    }
                }
                if !u.path.is_empty() && u.path != "/" {
                    let _ = writeln!(err, "WARNING: path in --base-uri is ignored. Please specify --vhost and/or --path-prefix separately.\n");
                }
            }
            None => return Err(Stop::Usage(format!("Could not parse base URI '{base}'"))),
        }
    }
    Ok(Options { values })
}

struct UrlParts {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    path: String,
}

fn url_parts(uri: &str) -> Option<UrlParts> {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, String::new()),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, pass) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_owned()), Some(b.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_owned(), Some(p.to_owned()))
        }
        _ => (hostport.to_owned(), None),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Some(UrlParts {
        host: (!host.is_empty()).then_some(host),
        port,
        user,
        pass,
        path,
    })
}

// ---------------------------------------------------------------------------------------
// Verbs and their arguments

/// An argument's default: absent, a string, or JSON.
#[derive(Clone)]
enum Dflt {
    None,
    Str(&'static str),
    Json(&'static str),
}

struct Spec {
    /// Mandatory arguments; a group is satisfied by any one of its names.
    mandatory: &'static [&'static [&'static str]],
    optional: &'static [(&'static str, Dflt)],
    json: &'static [&'static str],
    uri: &'static str,
    queue_type_fixup: bool,
}

const fn spec(
    mandatory: &'static [&'static [&'static str]],
    optional: &'static [(&'static str, Dflt)],
    json: &'static [&'static str],
    uri: &'static str,
) -> Spec {
    Spec {
        mandatory,
        optional,
        json,
        uri,
        queue_type_fixup: false,
    }
}

use Dflt::{Json as DJ, None as DN, Str as DS};

const DECLARABLE: &[(&str, Spec)] = &[
    (
        "exchange",
        spec(
            &[&["name"], &["type"]],
            &[
                ("auto_delete", DS("false")),
                ("durable", DS("true")),
                ("internal", DS("false")),
                ("arguments", DJ("{}")),
            ],
            &["arguments"],
            "/exchanges/{vhost}/{name}",
        ),
    ),
    (
        "queue",
        Spec {
            mandatory: &[&["name"]],
            optional: &[
                ("auto_delete", DS("false")),
                ("durable", DS("true")),
                ("arguments", DJ("{}")),
                ("node", DN),
                ("queue_type", DN),
            ],
            json: &["arguments"],
            uri: "/queues/{vhost}/{name}",
            queue_type_fixup: true,
        },
    ),
    (
        "binding",
        spec(
            &[&["source"], &["destination"]],
            &[
                ("destination_type", DS("queue")),
                ("routing_key", DS("")),
                ("arguments", DJ("{}")),
            ],
            &["arguments"],
            "/bindings/{vhost}/e/{source}/{destination_char}/{destination}",
        ),
    ),
    (
        "vhost",
        spec(&[&["name"]], &[("tracing", DN)], &[], "/vhosts/{name}"),
    ),
    (
        "user",
        spec(
            &[&["name"], &["password", "password_hash"], &["tags"]],
            &[("hashing_algorithm", DN)],
            &[],
            "/users/{name}",
        ),
    ),
    (
        "permission",
        spec(
            &[&["vhost"], &["user"], &["configure"], &["write"], &["read"]],
            &[],
            &[],
            "/permissions/{vhost}/{user}",
        ),
    ),
    (
        "parameter",
        spec(
            &[&["component"], &["name"], &["value"]],
            &[],
            &["value"],
            "/parameters/{component}/{vhost}/{name}",
        ),
    ),
    (
        "policy",
        spec(
            &[&["name"], &["pattern"], &["definition"]],
            &[("priority", DJ("0")), ("apply-to", DN)],
            &["definition", "priority"],
            "/policies/{vhost}/{name}",
        ),
    ),
    (
        "operator_policy",
        spec(
            &[&["name"], &["pattern"], &["definition"]],
            &[("priority", DJ("0")), ("apply-to", DN)],
            &["definition", "priority"],
            "/operator-policies/{vhost}/{name}",
        ),
    ),
    (
        "vhost_limit",
        spec(
            &[&["vhost"], &["name"], &["value"]],
            &[],
            &["value"],
            "/vhost-limits/{vhost}/{name}",
        ),
    ),
];

const DELETABLE: &[(&str, Spec)] = &[
    (
        "exchange",
        spec(&[&["name"]], &[], &[], "/exchanges/{vhost}/{name}"),
    ),
    (
        "queue",
        spec(&[&["name"]], &[], &[], "/queues/{vhost}/{name}"),
    ),
    (
        "binding",
        spec(
            &[&["source"], &["destination_type"], &["destination"]],
            &[("properties_key", DS("~"))],
            &[],
            "/bindings/{vhost}/e/{source}/{destination_char}/{destination}/{properties_key}",
        ),
    ),
    ("vhost", spec(&[&["name"]], &[], &[], "/vhosts/{name}")),
    ("user", spec(&[&["name"]], &[], &[], "/users/{name}")),
    (
        "permission",
        spec(
            &[&["vhost"], &["user"]],
            &[],
            &[],
            "/permissions/{vhost}/{user}",
        ),
    ),
    (
        "parameter",
        spec(
            &[&["component"], &["name"]],
            &[],
            &[],
            "/parameters/{component}/{vhost}/{name}",
        ),
    ),
    (
        "policy",
        spec(&[&["name"]], &[], &[], "/policies/{vhost}/{name}"),
    ),
    (
        "operator_policy",
        spec(&[&["name"]], &[], &[], "/operator-policies/{vhost}/{name}"),
    ),
    (
        "vhost_limit",
        spec(
            &[&["vhost"], &["name"]],
            &[],
            &[],
            "/vhost-limits/{vhost}/{name}",
        ),
    ),
];

const CLOSABLE: &[(&str, Spec)] = &[(
    "connection",
    spec(&[&["name"]], &[], &[], "/connections/{name}"),
)];

const PURGABLE: &[(&str, Spec)] = &[(
    "queue",
    spec(&[&["name"]], &[], &[], "/queues/{vhost}/{name}/contents"),
)];

const PUBLISH: Spec = spec(
    &[&["routing_key"]],
    &[
        ("payload", DN),
        ("properties", DJ("{}")),
        ("exchange", DS("amq.default")),
        ("payload_encoding", DS("string")),
    ],
    &["properties"],
    "/exchanges/{vhost}/{exchange}/publish",
);

const GET: Spec = spec(
    &[&["queue"]],
    &[
        ("count", DS("1")),
        ("ackmode", DS("ack_requeue_true")),
        ("payload_file", DN),
        ("encoding", DS("auto")),
    ],
    &[],
    "/queues/{vhost}/{queue}/get",
);

/// What can be listed: (type, filtered by vhost, default columns, JSON-valued keys).
const LISTABLE: &[(&str, bool, &[&str], &[&str])] = &[
    ("connections", false, &["name", "user", "channels"], &[]),
    ("channels", false, &["name", "user"], &[]),
    ("consumers", true, &[], &[]),
    ("exchanges", true, &["name", "type"], &[]),
    ("queues", true, &["name", "messages"], &[]),
    (
        "bindings",
        true,
        &["source", "destination", "routing_key"],
        &[],
    ),
    ("users", false, &[], &[]),
    ("vhosts", false, &["name", "messages"], &[]),
    ("permissions", false, &[], &[]),
    ("nodes", false, &["name", "type", "mem_used"], &[]),
    ("parameters", false, &[], &["value"]),
    ("policies", false, &[], &["definition"]),
    ("operator_policies", false, &[], &["definition"]),
    ("vhost_limits", false, &[], &["value"]),
];

const SHOWABLE: &[(&str, bool, &[&str], &[&str])] = &[(
    "overview",
    false,
    &[
        "rabbitmq_version",
        "cluster_name",
        "queue_totals.messages",
        "object_totals.queues",
    ],
    &[],
)];

/// Python's `urllib.parse.quote(s, safe='')`.
fn quote(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Python's `urllib.parse.quote_plus(s)`.
fn quote_plus(s: &str) -> String {
    quote(s).replace("%20", "+")
}

// ---------------------------------------------------------------------------------------
// The run

struct Admin<'a, 'io> {
    options: Options,
    args: Vec<String>,
    io: &'a mut Io<'io>,
    client: Option<reqwest::Client>,
}

/// Runs rabbitmqadmin with `args` (without the program name).
pub async fn run(args: &[String], io: &mut Io<'_>) -> Exit {
    let result = async {
        let (cli, positional) = parse_command_line(args)?;
        let options = resolve_options(cli, io.err)?;
        let mut admin = Admin {
            options,
            args: positional,
            io,
            client: None,
        };
        admin.main().await
    }
    .await;
    match result {
        Ok(()) => 0,
        Err(Stop::Done(-1)) => {
            let _ = io.out.write_all(help_text().as_bytes());
            0
        }
        Err(Stop::Done(code)) => code,
        Err(Stop::Usage(msg)) => {
            let _ = write!(io.err, "\nERROR: {msg}\n\n{PROG} --help for help\n\n");
            1
        }
        Err(Stop::Die(msg)) => {
            let _ = write!(io.err, "*** {msg}\n\n");
            1
        }
        Err(Stop::Plain(msg)) => {
            let _ = writeln!(io.err, "{msg}");
            1
        }
        Err(Stop::BadOption(msg)) => {
            let _ = write!(io.err, "{}\n{PROG}: error: {msg}\n", usage_head());
            2
        }
    }
}

fn usage_head() -> String {
    format!("Usage\n=====\n  {PROG} [options] subcommand\n")
}

fn title(name: &str) -> String {
    format!("\n{name}\n{}\n\n", "=".repeat(name.len()))
}

fn help_text() -> String {
    let mut s = usage_head();
    s.push_str(&title("Options"));
    for o in OPTIONS {
        let mut names = Vec::new();
        let value = if o.metavar.is_empty() {
            String::new()
        } else {
            o.metavar.to_owned()
        };
        names.push(if value.is_empty() {
            format!("--{}", o.long)
        } else {
            format!("--{}={value}", o.long)
        });
        if let Some(c) = o.short {
            names.push(if value.is_empty() {
                format!("-{c}")
            } else {
                format!("-{c} {value}")
            });
        }
        let head = names.join(", ");
        if head.len() <= 22 {
            s.push_str(&format!("{head:<24}{}\n", o.help));
        } else {
            s.push_str(&format!("{head}\n{:24}{}\n", "", o.help));
        }
    }
    s.push_str(
        "\nMore Help\n=========\n\nFor more help use the help subcommand:\n\n  rabbitmqadmin help subcommands  # For a list of available subcommands\n  rabbitmqadmin help config       # For help with the configuration file\n",
    );
    s
}

fn spec_usage(root: &[(&str, Spec)], verb: &str) -> String {
    let mut text = String::new();
    for (name, spec) in root {
        let mandatory: Vec<String> = spec
            .mandatory
            .iter()
            .map(|group| format!("{}=...", group.join("=... OR ")))
            .collect();
        let mut line = mandatory.join(" ");
        if !spec.optional.is_empty() {
            let opts: Vec<String> = spec
                .optional
                .iter()
                .map(|(k, _)| format!("{k}=..."))
                .collect();
            line.push_str(&format!(" [{}]", opts.join(" ")));
        }
        let verb = if verb.is_empty() {
            String::new()
        } else {
            format!(" {verb}")
        };
        text.push_str(&format!(" {verb} {name} {line}\n"));
    }
    text
}

fn subcommands_usage() -> String {
    let mut u =
        format!("Usage\n=====\n  {PROG} [options] subcommand\n\n  where subcommand is one of:\n");
    u.push_str(&title("Display"));
    for (l, ..) in LISTABLE {
        u.push_str(&format!("  list {l} [<column>...]\n"));
    }
    for (s, ..) in SHOWABLE {
        u.push_str(&format!("  show {s} [<column>...]\n"));
    }
    u.push_str(&title("Object Manipulation"));
    u.push_str(&spec_usage(DECLARABLE, "declare"));
    u.push_str(&spec_usage(DELETABLE, "delete"));
    u.push_str(&spec_usage(CLOSABLE, "close"));
    u.push_str(&spec_usage(PURGABLE, "purge"));
    u.push_str(&title("Broker Definitions"));
    u.push_str("  export <file>\n  import <file>\n");
    u.push_str(&title("Publishing and Consuming"));
    u.push_str(&spec_usage(&[("publish", PUBLISH), ("get", GET)], ""));
    u.push_str("\n  * If payload is not specified on publish, standard input is used\n\n  * If payload_file is not specified on get, the payload will be shown on\n    standard output along with the message metadata\n\n  * If payload_file is specified on get, count must not be set\n");
    u
}

fn config_usage() -> String {
    let mut u = format!("Usage\n=====\n{PROG} [options] subcommand\n");
    u.push_str(&title("Configuration File"));
    u.push_str("  Hosts and credentials can be kept in an INI file (default: ~/.rabbitmqadmin.conf),\n  one section per node; options on the command line take precedence.\n");
    u.push_str(&title("Example"));
    u.push_str("  [host_normal]\n  hostname = localhost\n  port = 15672\n  username = guest\n  password = guest\n  declare_vhost = /\n  vhost = /\n\n  [host_https]\n  hostname = otherhost\n  port = 15671\n  username = guest\n  password = guest\n  ssl = True\n  ssl_key_file = /path/to/client_key.pem\n  ssl_cert_file = /path/to/client_certificate.pem\n");
    u.push_str(&title("Use"));
    u.push_str(&format!(
        "  {PROG} -c rabbitmqadmin.conf.example -N host_normal ..."
    ));
    u
}

impl Admin<'_, '_> {
    fn say(&mut self, line: &str) {
        if self.options.verbose() {
            let _ = writeln!(self.io.out, "{line}");
        }
    }

    fn print(&mut self, line: &str) {
        let _ = writeln!(self.io.out, "{line}");
    }

    async fn main(&mut self) -> R<()> {
        if self.options.flag("version") {
            let v = warren_server::config::RABBITMQ_VERSION;
            self.print(&format!("{PROG} {v}"));
            return Ok(());
        }
        if self.options.flag("bash_completion") {
            self.print(&bash_completion());
            return Ok(());
        }
        if self.args.is_empty() {
            return Err(Stop::Usage("Action not specified".into()));
        }
        let verb = self.args.remove(0);
        match verb.as_str() {
            "help" => self.help(),
            "list" => self.list(LISTABLE, "list").await,
            "show" => self.list(SHOWABLE, "show").await,
            "declare" => self.declare_delete(DECLARABLE, "declared").await,
            "delete" => self.declare_delete(DELETABLE, "deleted").await,
            "close" => self.declare_delete(CLOSABLE, "closed").await,
            "purge" => self.declare_delete(PURGABLE, "purged").await,
            "publish" => self.publish().await,
            "get" => self.get_messages().await,
            "export" => self.export().await,
            "import" => self.import().await,
            other => Err(Stop::Usage(format!("Action {other} not understood"))),
        }
    }

    fn help(&mut self) -> R<()> {
        let text = match self.args.as_slice() {
            [] => return Err(Stop::Done(-1)),
            [topic] if topic == "subcommands" => subcommands_usage(),
            [topic] if topic == "config" => config_usage(),
            [_] => {
                return Err(Stop::Usage(
                    "help topic must be one of:\n  subcommands\n  config".into(),
                ))
            }
            _ => return Err(Stop::Usage("Exactly one argument required".into())),
        };
        self.print(&text);
        Ok(())
    }

    fn one_arg(&self) -> R<String> {
        match self.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Stop::Usage("Exactly one argument required".into())),
        }
    }

    fn vhost_suffix(&self) -> String {
        match self.options.get("vhost") {
            Some(v) if !v.is_empty() => format!("/{}", quote_plus(v)),
            _ => String::new(),
        }
    }

    async fn list(&mut self, table: &[(&str, bool, &[&str], &[&str])], verb: &str) -> R<()> {
        let Some(obj_type) = self.args.first().cloned() else {
            return Err(Stop::Usage(format!(
                "Don't know how to {verb} (no type given)"
            )));
        };
        let Some(&(_, by_vhost, default_cols, json_keys)) =
            table.iter().find(|(name, ..)| *name == obj_type)
        else {
            return Err(Stop::Usage(format!("Don't know how to {verb} {obj_type}")));
        };
        let mut uri = format!("/{}", obj_type.replace('_', "-"));
        if by_vhost {
            uri.push_str(&self.vhost_suffix());
        }
        let format = self.options.str("format").to_owned();
        let use_cols = self.options.str("depth") == "1" && !format.contains("json");
        let mut cols: Vec<String> = self.args[1..].to_vec();
        if cols.is_empty() && use_cols {
            cols = default_cols.iter().map(|c| (*c).to_owned()).collect();
        }
        let mut query = Vec::new();
        if !cols.is_empty() {
            query.push(format!("columns={}", cols.join(",")));
        }
        if let Some(sort) = self.options.get("sort").filter(|s| !s.is_empty()) {
            query.push(format!("sort={sort}"));
        }
        if self.options.flag("sort_reverse") {
            query.push("sort_reverse=true".into());
        }
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query.join("&"));
        }
        let mut body = self.http("GET", &uri, None).await?;
        if verb == "show" {
            body = format!("[{body}]");
        }
        self.format_list(&body, &cols, json_keys)
    }

    fn format_list(&mut self, body: &str, cols: &[String], json_keys: &[&str]) -> R<()> {
        let format = self.options.str("format").to_owned();
        match format.as_str() {
            "raw_json" => {
                self.print(body);
                return Ok(());
            }
            "pretty_json" => {
                let v = J::parse(body)
                    .map_err(|e| Stop::Die(format!("Invalid JSON from the server: {e}")))?;
                self.print(&v.pretty());
                return Ok(());
            }
            "tsv" | "long" | "table" | "kvp" | "bash" => {}
            other => return Err(Stop::Usage(format!("Format {other} not recognised"))),
        }
        let items =
            J::parse(body).map_err(|e| Stop::Die(format!("Invalid JSON from the server: {e}")))?;
        let depth = if cols.is_empty() {
            match self.options.str("depth").trim().parse::<usize>() {
                Ok(d) => d,
                Err(_) => {
                    return Err(Stop::Usage(format!(
                        "invalid depth '{}'",
                        self.options.str("depth")
                    )))
                }
            }
        } else {
            usize::MAX
        };
        let table = format::to_table(&items, cols, depth, json_keys);
        if table.rows.is_empty() {
            self.say("No items");
            return Ok(());
        }
        let verbose = self.options.verbose();
        for line in format::render(&format, &table, verbose) {
            self.print(&line);
        }
        Ok(())
    }

    /// Builds the request body and path for `spec` from `name=value` arguments, as the
    /// v1 tool does.
    fn parse_args(&self, args: &[String], spec: &Spec) -> R<(String, Vec<(String, J)>)> {
        let mut upload: Vec<(String, J)> = Vec::new();
        let set = |upload: &mut Vec<(String, J)>, k: &str, v: J| match upload
            .iter_mut()
            .find(|(key, _)| key == k)
        {
            Some(slot) => slot.1 = v,
            None => upload.push((k.to_owned(), v)),
        };
        for (k, d) in spec.optional {
            match d {
                Dflt::None => {}
                Dflt::Str(s) => set(&mut upload, k, J::Str((*s).into())),
                Dflt::Json(s) => set(&mut upload, k, J::parse(s).unwrap_or(J::Null)),
            }
        }
        let mandatory_keys: Vec<&str> = spec
            .mandatory
            .iter()
            .flat_map(|g| g.iter().copied())
            .collect();
        for arg in args {
            let Some((name, value)) = arg.split_once('=') else {
                return Err(Stop::Usage(format!(
                    "Argument \"{arg}\" not in the name=value format"
                )));
            };
            if !mandatory_keys.contains(&name) && !spec.optional.iter().any(|(k, _)| *k == name) {
                return Err(Stop::Usage(format!(
                    "Argument \"{name}\" is not recognised"
                )));
            }
            let v = if spec.json.contains(&name) {
                match J::parse(value) {
                    Ok(v) => v,
                    Err(_) => {
                        return Err(Stop::Plain(format!(
                            "ERROR: Could not parse JSON:\n  {value}"
                        )))
                    }
                }
            } else {
                J::Str(value.to_owned())
            };
            set(&mut upload, name, v);
        }
        for group in spec.mandatory {
            let present = group.iter().any(|m| upload.iter().any(|(k, _)| k == m));
            if !present {
                return Err(Stop::Usage(if group.len() == 1 {
                    format!("mandatory argument \"{}\" is required", group[0])
                } else {
                    format!(
                        "one of mandatory arguments \"['{}']\" is required",
                        group.join("', '")
                    )
                }));
            }
        }
        if !mandatory_keys.contains(&"vhost") {
            let vhost = match self.options.get("vhost") {
                Some(v) if !v.is_empty() => v.to_owned(),
                _ => self.options.str("declare_vhost").to_owned(),
            };
            set(&mut upload, "vhost", J::Str(vhost));
        }
        // The path: each {key} from a non-empty string argument, percent-encoded.
        let mut uri_args: HashMap<String, String> = HashMap::new();
        for (k, v) in &upload {
            if let J::Str(s) = v {
                if !s.is_empty() {
                    uri_args.insert(k.clone(), quote(s));
                    if k == "destination_type" {
                        uri_args.insert("destination_char".into(), s.chars().take(1).collect());
                    }
                }
            }
        }
        let mut uri = String::new();
        let mut rest = spec.uri;
        while let Some(start) = rest.find('{') {
            uri.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .unwrap_or(rest.len() - 1);
            let key = &rest[start + 1..end];
            match uri_args.get(key) {
                Some(v) => uri.push_str(v),
                None => {
                    let shown = if key == "destination_char" {
                        "destination_type"
                    } else {
                        key
                    };
                    return Err(Stop::Usage(format!(
                        "Argument \"{shown}\" must not be empty"
                    )));
                }
            }
            rest = &rest[end + 1..];
        }
        uri.push_str(rest);
        if spec.queue_type_fixup {
            if let Some(qt) = upload
                .iter()
                .find(|(k, _)| k == "queue_type")
                .map(|(_, v)| v.clone())
            {
                let mut args = match upload.iter().find(|(k, _)| k == "arguments") {
                    Some((_, J::Obj(pairs))) => pairs.clone(),
                    _ => Vec::new(),
                };
                match args.iter_mut().find(|(k, _)| k == "x-queue-type") {
                    Some(slot) => slot.1 = qt,
                    None => args.push(("x-queue-type".into(), qt)),
                }
                set(&mut upload, "arguments", J::Obj(args));
            }
        }
        Ok((uri, upload))
    }

    async fn declare_delete(&mut self, root: &[(&str, Spec)], done: &str) -> R<()> {
        let Some(obj_type) = self.args.first().cloned() else {
            return Err(Stop::Usage("Type not specified".into()));
        };
        let Some((_, spec)) = root.iter().find(|(name, _)| *name == obj_type) else {
            return Err(Stop::Usage(format!("Type {obj_type} not recognised")));
        };
        let rest = self.args[1..].to_vec();
        let (uri, upload) = self.parse_args(&rest, spec)?;
        match done {
            "declared" => {
                let body = serde_json::to_string(&J::Obj(upload)).unwrap_or_default();
                let method = if obj_type == "binding" { "POST" } else { "PUT" };
                self.http(method, &uri, Some(body)).await?;
            }
            _ => {
                self.http("DELETE", &uri, None).await?;
            }
        }
        self.say(&format!("{obj_type} {done}"));
        Ok(())
    }

    async fn publish(&mut self) -> R<()> {
        let args = self.args.clone();
        let (uri, mut upload) = self.parse_args(&args, &PUBLISH)?;
        if !upload.iter().any(|(k, _)| k == "payload") {
            let mut data = Vec::new();
            if let Err(e) = self.io.stdin.read_to_end(&mut data) {
                return Err(Stop::Die(format!(
                    "Could not read the payload from standard input: {e}"
                )));
            }
            let text = String::from_utf8_lossy(&data);
            upload.push(("payload".into(), J::Str(base64_encode(text.as_bytes()))));
            match upload.iter_mut().find(|(k, _)| k == "payload_encoding") {
                Some(slot) => slot.1 = J::Str("base64".into()),
                None => upload.push(("payload_encoding".into(), J::Str("base64".into()))),
            }
        }
        let body = serde_json::to_string(&J::Obj(upload)).unwrap_or_default();
        let resp = self.http("POST", &uri, Some(body)).await?;
        let routed = J::parse(&resp)
            .ok()
            .and_then(|v| v.get("routed").cloned())
            .ok_or_else(|| Stop::Die(format!("Unexpected reply from the server: {resp}")))?;
        if routed == J::Bool(true) {
            self.say("Message published");
        } else {
            self.say("Message published but NOT routed");
        }
        Ok(())
    }

    async fn get_messages(&mut self) -> R<()> {
        let args = self.args.clone();
        let (uri, upload) = self.parse_args(&args, &GET)?;
        let field = |k: &str| {
            upload
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let payload_file = match field("payload_file") {
            Some(J::Str(f)) if !f.is_empty() => Some(f),
            _ => None,
        };
        if payload_file.is_some() && field("count") != Some(J::Str("1".into())) {
            return Err(Stop::Usage(
                "Cannot get multiple messages using payload_file".into(),
            ));
        }
        let body = serde_json::to_string(&J::Obj(upload.clone())).unwrap_or_default();
        let result = self.http("POST", &uri, Some(body)).await?;
        match payload_file {
            Some(path) => {
                let first = J::parse(&result).ok().and_then(|v| match v {
                    J::Arr(items) => items.into_iter().next(),
                    _ => None,
                });
                let Some(msg) = first else {
                    return Err(Stop::Die("No message to write to the payload file".into()));
                };
                let payload = match msg.get("payload") {
                    Some(J::Str(s)) => s.clone(),
                    _ => String::new(),
                };
                let data = if msg.get("payload_encoding") == Some(&J::Str("base64".into())) {
                    base64_decode(&payload)
                        .ok_or_else(|| Stop::Die("Invalid base64 payload".into()))?
                } else {
                    payload.into_bytes()
                };
                std::fs::write(&path, data)
                    .map_err(|e| Stop::Die(format!("Could not write {path}: {e}")))?;
                let cols: Vec<String> = [
                    "routing_key",
                    "exchange",
                    "message_count",
                    "payload_bytes",
                    "redelivered",
                ]
                .iter()
                .map(|c| (*c).to_owned())
                .collect();
                self.format_list(&result, &cols, &[])
            }
            None => self.format_list(&result, &[], &[]),
        }
    }

    async fn export(&mut self) -> R<()> {
        let path = self.one_arg()?;
        let uri = format!("/definitions{}", self.vhost_suffix());
        let defs = self.http("GET", &uri, None).await?;
        std::fs::write(&path, defs.as_bytes())
            .map_err(|e| Stop::Die(format!("Could not write {path}: {e}")))?;
        let host = self.options.str("hostname").to_owned();
        self.say(&format!("Exported definitions for {host} to \"{path}\""));
        Ok(())
    }

    async fn import(&mut self) -> R<()> {
        let path = self.one_arg()?;
        let defs =
            std::fs::read(&path).map_err(|e| Stop::Die(format!("Could not read {path}: {e}")))?;
        let uri = format!("/definitions{}", self.vhost_suffix());
        self.http(
            "POST",
            &uri,
            Some(String::from_utf8_lossy(&defs).into_owned()),
        )
        .await?;
        let host = self.options.str("hostname").to_owned();
        self.say(&format!("Uploaded definitions from \"{host}\" to {path}. The import process may take some time. Consult server logs to track progress."));
        Ok(())
    }

    fn client(&mut self) -> R<reqwest::Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let timeout = self
            .options
            .str("request_timeout")
            .trim()
            .parse::<u64>()
            .unwrap_or(120);
        let mut b = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(timeout))
            .redirect(reqwest::redirect::Policy::limited(5));
        if self.options.flag("ssl") {
            let insecure = self.options.flag("ssl_insecure");
            if insecure {
                b = b.danger_accept_invalid_certs(true);
            }
            if insecure || self.options.flag("ssl_disable_hostname_verification") {
                b = b.danger_accept_invalid_hostnames(true);
            }
            if let Some(ca) = self
                .options
                .get("ssl_ca_cert_file")
                .filter(|s| !s.is_empty())
            {
                let pem = std::fs::read(ca)
                    .map_err(|e| Stop::Die(format!("Could not read {ca}: {e}")))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| Stop::Die(format!("Invalid CA certificate file {ca}: {e}")))?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            if let Some(key) = self.options.get("ssl_key_file").filter(|s| !s.is_empty()) {
                let cert = self.options.str("ssl_cert_file").to_owned();
                let mut pem = std::fs::read(&cert)
                    .map_err(|e| Stop::Die(format!("Could not read {cert}: {e}")))?;
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key)
                        .map_err(|e| Stop::Die(format!("Could not read {key}: {e}")))?,
                );
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| Stop::Die(format!("Invalid client certificate or key: {e}")))?;
                b = b.identity(id);
            }
        }
        let c = b
            .build()
            .map_err(|e| Stop::Die(format!("Could not set up the HTTP client: {e}")))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// One request to the management API; errors end the run as the v1 tool ends it.
    async fn http(&mut self, method: &str, path: &str, body: Option<String>) -> R<String> {
        let client = self.client()?;
        let scheme = if self.options.flag("ssl") {
            "https"
        } else {
            "http"
        };
        let host = self.options.str("hostname");
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let full_path = format!("{}/api{path}", self.options.str("path_prefix"));
        let url = format!("{scheme}://{host}:{}{full_path}", self.options.str("port"));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = client.request(method, &url).basic_auth(
            self.options.str("username"),
            Some(self.options.str("password")),
        );
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Stop::Die(format!(
                    "Timed out getting HTTP response (request timeout: {} seconds)",
                    self.options.str("request_timeout")
                )))
            }
            Err(e) => {
                return Err(Stop::Die(format!(
                    "Could not connect: {}",
                    connect_error(&e)
                )))
            }
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => {
                return Err(Stop::Die(format!(
                    "Timed out getting HTTP response (request timeout: {} seconds)",
                    self.options.str("request_timeout")
                )))
            }
            Err(e) => return Err(Stop::Die(format!("Error getting HTTP response:\n\n{e}"))),
        };
        match status.as_u16() {
            400 => {
                let reason = J::parse(&text)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(J::cell))
                    .unwrap_or(text);
                Err(Stop::Die(reason))
            }
            401 => Err(Stop::Die(format!("Access refused: {full_path}"))),
            404 => Err(Stop::Die(format!("Not found: {full_path}"))),
            s if s > 400 => {
                let _ = writeln!(
                    self.io.err,
                    "Exception: Received response {s} {} for path {full_path}\n{text}",
                    status.canonical_reason().unwrap_or("")
                );
                Err(Stop::Done(1))
            }
            _ => Ok(text),
        }
    }
}

/// The text of a connection error, with Python's `[Errno N]` form for the common ones.
fn connect_error(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "[Errno 111] Connection refused".into(),
                _ => io.to_string(),
            };
        }
        source = s.source();
    }
    e.to_string()
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

fn bash_completion() -> String {
    let names =
        |t: &[(&str, bool, &[&str], &[&str])]| t.iter().map(|x| x.0).collect::<Vec<_>>().join(" ");
    let keys = |t: &[(&str, Spec)]| t.iter().map(|x| x.0).collect::<Vec<_>>().join(" ");
    let formats = "raw_json pretty_json tsv long table kvp bash";
    let mut s = String::from("# Bash completion for rabbitmqadmin: source this file, or copy it to\n# /etc/bash_completion.d. rabbitmqadmin must be on your PATH.\n_rabbitmqadmin()\n{\n    local cur prev opts base\n    COMPREPLY=()\n    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n\n    opts=\"list show declare delete close purge import export get publish help\"\n    fargs=\"--help --host --port --vhost --username --password --format --depth --sort --sort-reverse\"\n\n    case \"${prev}\" in\n");
    let mut case = |pat: &str, body: String| {
        s.push_str(&format!(
            "        {pat})\n            {body}\n            return 0\n            ;;\n"
        ));
    };
    case(
        "list",
        format!(
            "COMPREPLY=( $(compgen -W '{}' -- ${{cur}}) )",
            names(LISTABLE)
        ),
    );
    case(
        "show",
        format!(
            "COMPREPLY=( $(compgen -W '{}' -- ${{cur}}) )",
            names(SHOWABLE)
        ),
    );
    case(
        "declare",
        format!(
            "COMPREPLY=( $(compgen -W '{}' -- ${{cur}}) )",
            keys(DECLARABLE)
        ),
    );
    case(
        "delete",
        format!(
            "COMPREPLY=( $(compgen -W '{}' -- ${{cur}}) )",
            keys(DELETABLE)
        ),
    );
    case(
        "close",
        format!(
            "COMPREPLY=( $(compgen -W '{}' -- ${{cur}}) )",
            keys(CLOSABLE)
        ),
    );
    case(
        "purge",
        format!(
            "COMPREPLY=( $(compgen -W '{}' -- ${{cur}}) )",
            keys(PURGABLE)
        ),
    );
    case("export|import", "COMPREPLY=( $(compgen -f ${cur}) )".into());
    case(
        "help",
        "COMPREPLY=( $(compgen -W \"subcommands config\" -- ${cur}) )".into(),
    );
    case(
        "-H|--host",
        "COMPREPLY=( $(compgen -A hostname ${cur}) )".into(),
    );
    case(
        "-V|--vhost",
        "COMPREPLY=( $(compgen -W \"$(rabbitmqadmin -q -f bash list vhosts)\" -- ${cur}) )".into(),
    );
    case(
        "-u|--username",
        "COMPREPLY=( $(compgen -W \"$(rabbitmqadmin -q -f bash list users)\" -- ${cur}) )".into(),
    );
    case(
        "-f|--format",
        format!("COMPREPLY=( $(compgen -W \"{formats}\" -- ${{cur}}) )"),
    );
    for (l, ..) in LISTABLE {
        let key = &l[..l.len() - 1];
        case(
            key,
            format!(
                "COMPREPLY=( $(compgen -W \"$(rabbitmqadmin -q -f bash list {l})\" -- ${{cur}}) )"
            ),
        );
    }
    s.push_str("        *)\n        ;;\n    esac\n\n    COMPREPLY=($(compgen -W \"${opts} ${fargs}\" -- ${cur}))\n    return 0\n}\ncomplete -F _rabbitmqadmin rabbitmqadmin\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> R<(HashMap<String, String>, Vec<String>)> {
        parse_command_line(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_as_optparse_does() {
        let (set, pos) = parse(&[
            "-Hhost", "list", "--port=1", "queues", "-qf", "tsv", "--vh", "v",
        ])
        .ok()
        .unwrap();
        assert_eq!(set["hostname"], "host");
        assert_eq!(set["port"], "1");
        assert_eq!(set["verbose"], "False");
        assert_eq!(set["format"], "tsv");
        assert_eq!(set["vhost"], "v");
        assert_eq!(pos, ["list", "queues"]);
        assert!(matches!(parse(&["-x"]), Err(Stop::BadOption(m)) if m == "no such option: -x"));
        assert!(
            matches!(parse(&["-t", "abc"]), Err(Stop::BadOption(m)) if m == "option -t: invalid integer value: 'abc'")
        );
        assert!(
            matches!(parse(&["-H"]), Err(Stop::BadOption(m)) if m == "-H option requires 1 argument")
        );
        assert!(
            matches!(parse(&["--ss"]), Err(Stop::BadOption(m)) if m.starts_with("ambiguous option: --ss (--ssl, --ssl-ca-cert-file,"))
        );
        let (_, pos) = parse(&["--", "-q"]).ok().unwrap();
        assert_eq!(pos, ["-q"]);
    }

    #[test]
    fn quoting_matches_python() {
        assert_eq!(quote("a/b c~_.-é"), "a%2Fb%20c~_.-%C3%A9");
        assert_eq!(quote_plus("/ x"), "%2F+x");
    }

    #[test]
    fn ini_sections_and_base_uri() {
        let text =
            "[DEFAULT]\nport = 1\n\n[one]\nHostName = h1\nssl: True\n; note\n[two]\nhostname=h2\n";
        let one = read_ini_section(text, "one").unwrap();
        assert_eq!(one["hostname"], "h1");
        assert_eq!(one["ssl"], "True");
        assert_eq!(one["port"], "1");
        assert!(read_ini_section(text, "three").is_none());
        let u = url_parts("https://u:p@example.com:15671/x").unwrap();
        assert_eq!(u.host.as_deref(), Some("example.com"));
        assert_eq!(u.port.as_deref(), Some("15671"));
        assert_eq!(u.user.as_deref(), Some("u"));
        assert_eq!(u.pass.as_deref(), Some("p"));
        assert_eq!(u.path, "/x");
    }
}
