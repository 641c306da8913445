//! The control socket's protocol: one JSON request line from the tool, one JSON reply
//! line from the node, then the connection closes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a tool asks the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Request {
    /// The command, with rabbitmqctl's name (`list_queues`, `add_user`, ...).
    pub command: String,
    /// Positional arguments after the command.
    #[serde(default)]
    pub args: Vec<String>,
    /// `-p VHOST` (default `/`).
    #[serde(default)]
    pub vhost: Option<String>,
    /// Other `--name value` options (`--priority`, `--apply-to`, `--if-empty`, ...).
    #[serde(default)]
    pub options: serde_json::Map<String, Value>,
}

/// The node's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The tool's exit code (0, or rabbitmqctl's 64, 65, 67, 69, 70, 75).
    pub code: i32,
    /// An error or result text, printed after the banner.
    #[serde(default)]
    pub message: String,
    /// For list commands: the rows, each an object of column values.
    #[serde(default)]
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// For list commands: the columns, in order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// A JSON document (status, export_definitions).
    #[serde(default)]
    pub document: Option<Value>,
}

impl Reply {
    /// Success without output.
    pub fn ok() -> Self {
        Reply::default()
    }

    /// Success with a text.
    pub fn text(message: impl Into<String>) -> Self {
        Reply {
            message: message.into(),
            ..Reply::default()
        }
    }

    /// A failure with rabbitmqctl's exit code.
    pub fn error(code: i32, message: impl Into<String>) -> Self {
        Reply {
            code,
            message: message.into(),
            ..Reply::default()
        }
    }
}

/// rabbitmqctl's exit codes (sysexits).
pub mod exit {
    /// Usage error.
    pub const USAGE: i32 = 64;
    /// Bad data (missing object, invalid value).
    pub const DATAERR: i32 = 65;
    /// No such user.
    pub const NOUSER: i32 = 67;
    /// The node is not running or not reachable.
    pub const UNAVAILABLE: i32 = 69;
    /// Internal error.
    pub const SOFTWARE: i32 = 70;
    /// Timed out.
    pub const TEMPFAIL: i32 = 75;
}
