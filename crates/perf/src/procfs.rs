//! What the kernel says about a process: resident memory (`/proc/PID/status` VmRSS) and
//! CPU time (`/proc/PID/stat` utime + stime). Linux only; elsewhere every read fails and
//! the report leaves the numbers out.

use crate::error::PerfError;

/// Clock ticks per second in `/proc/PID/stat`. The kernel fixes USER_HZ at 100 in its ABI
/// on every architecture Linux distributions ship for.
const USER_HZ: f64 = 100.0;

/// Resident set size of `pid`, in bytes.
///
/// # Errors
/// The process does not exist or the file is not in the expected format.
pub fn rss_bytes(pid: u32) -> Result<u64, PerfError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| PerfError::Proc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_vm_rss(&text).ok_or_else(|| PerfError::Proc {
        path,
        reason: "no VmRSS line".into(),
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    match unit {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

/// CPU seconds (user + system) used so far by `pid`, or by this process if `None`.
///
/// # Errors
/// The process does not exist or the file is not in the expected format.
pub fn cpu_seconds(pid: Option<u32>) -> Result<f64, PerfError> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| PerfError::Proc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_stat_cpu(&text).ok_or_else(|| PerfError::Proc {
        path,
        reason: "unexpected format".into(),
    })
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the
    // last ')'. Then field 3 is the state, and utime/stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`; sockets included).
///
/// # Errors
/// The process does not exist or its fd directory cannot be read (another user's).
pub fn open_fds(pid: u32) -> Result<u64, PerfError> {
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).map_err(|e| PerfError::Proc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(dir.count() as u64)
}

/// The soft limit on open files of `pid`, or of this process if `None`
/// (`/proc/PID/limits`, "Max open files"); `None` inside the result means unlimited.
///
/// # Errors
/// The process does not exist or the file is not in the expected format.
pub fn open_files_limit(pid: Option<u32>) -> Result<Option<u64>, PerfError> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/limits"),
        None => "/proc/self/limits".to_string(),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| PerfError::Proc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_open_files_limit(&text).ok_or_else(|| PerfError::Proc {
        path,
        reason: "no \"Max open files\" line".into(),
    })
}

fn parse_open_files_limit(limits: &str) -> Option<Option<u64>> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_open_files_limit() {
        let s = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max processes             95339                95339                processes \n\
                 Max open files            20000                65536                files     \n";
        assert_eq!(parse_open_files_limit(s), Some(Some(20000)));
        let s = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(s), Some(None));
        assert_eq!(parse_open_files_limit("Max processes 1 1\n"), None);
    }

    #[test]
    fn counts_own_fds_and_reads_own_limit() {
        assert!(open_fds(std::process::id()).unwrap() >= 3);
        assert!(open_files_limit(None).is_ok());
    }

    #[test]
    fn parses_vm_rss() {
        let s = "Name:\tbeam.smp\nVmPeak:\t  9 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(s), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let s = "123 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4";
        assert_eq!(parse_stat_cpu(s), Some(3.0));
    }

    #[test]
    fn reads_own_process() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(cpu_seconds(None).unwrap() >= 0.0);
    }
}
