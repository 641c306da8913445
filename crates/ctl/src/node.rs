//! Node names and where a node's control socket lives.
//!
//! rabbitmqctl finds its node by name (`-n NODE`, else `RABBITMQ_NODENAME`, else
//! `rabbit@HOSTNAME`). Warren maps the name to a Unix socket: `DIR/NODE.sock`, where
//! `DIR` is `WARREN_CONTROL_DIR`, else `$XDG_RUNTIME_DIR/warren`, else
//! `/tmp/warren-UID`. The directory is created with mode 0700 and the socket with mode
//! 0600, so only the broker's user (and root) can drive it. A ctl run with the same
//! environment as the server it started therefore finds that server, and nodes with
//! different names on one machine each have their own socket.

use std::path::PathBuf;

/// The machine's short host name.
pub fn hostname() -> String {
    warren_server::config::hostname()
}

/// A full node name: `name` as given, or `name@HOSTNAME` when it has no host part.
pub fn qualify(name: &str) -> String {
    if name.contains('@') {
        name.to_string()
    } else {
        format!("{name}@{}", hostname())
    }
}

/// The node name from `-n`, else `RABBITMQ_NODENAME`, else `rabbit@HOSTNAME`.
pub fn resolve(explicit: Option<&str>) -> String {
    let from_env = std::env::var("RABBITMQ_NODENAME")
        .ok()
        .filter(|s| !s.is_empty());
    qualify(explicit.or(from_env.as_deref()).unwrap_or("rabbit"))
}

/// The directory holding the control sockets of this user's nodes.
pub fn control_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WARREN_CONTROL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("warren");
    }
    let uid = rustix::process::getuid().as_raw();
    PathBuf::from(format!("/tmp/warren-{uid}"))
}

/// The control socket of `node`.
pub fn socket_path(node: &str) -> PathBuf {
    // A node name is `name@host`; neither part may hold a path separator.
    let safe: String = node
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    control_dir().join(format!("{safe}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_qualified_with_the_host() {
        assert_eq!(qualify("a@b"), "a@b");
        assert!(qualify("test2").starts_with("test2@"));
        assert!(socket_path("x/y@h").ends_with("x_y@h.sock"));
    }
}
