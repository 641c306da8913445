//! The errors of a benchmark run.

/// Why a run (or one of its producers or consumers) failed.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The command line does not describe a runnable scenario.
    #[error("invalid options: {0}")]
    Options(String),
    /// `--uri` does not parse.
    #[error("invalid --uri {uri:?}: {reason}")]
    Uri {
        /// What was given.
        uri: String,
        /// Why it was refused.
        reason: String,
    },
    /// An AMQP operation through lapin failed.
    #[error("{context}: {source}")]
    Amqp {
        /// What was being done.
        context: String,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// A socket operation of the raw handshake client failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The broker answered the raw handshake client with something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Something took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A `/proc` file could not be read.
    #[error("cannot read {path}: {reason}")]
    Proc {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl PerfError {
    /// Wraps a lapin error with what was being done.
    pub fn amqp(context: impl Into<String>) -> impl FnOnce(lapin::Error) -> PerfError {
        let context = context.into();
        move |source| PerfError::Amqp { context, source }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PerfError {
        let context = context.into();
        move |source| PerfError::Io { context, source }
    }
}
