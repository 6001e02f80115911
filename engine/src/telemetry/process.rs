//! The process's own figures under the names every Prometheus client
//! library uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! …), read from `/proc/self` when scraped. Off Linux they are left out.

use std::fmt::Write as _;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Start time, seconds since the epoch.
    pub start_time: f64,
}

/// Parses `/proc/self/stat` (`stat`) given the clock tick rate, the page
/// size and the boot time (`btime` of `/proc/stat`, seconds since the
/// epoch).
pub fn parse_stat(stat: &str, ticks: f64, page: u64, boot: f64) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing one.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time: boot + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
    })
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// This process's figures now, where `/proc` has them.
pub fn read() -> Option<Stat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if ticks <= 0 || page <= 0 {
        return None;
    }
    parse_stat(&stat, ticks as f64, page as u64, boot_time()?)
}

fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// Writes the process families.
pub fn write(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP sluice_build_info The running sluice's version.\n# TYPE sluice_build_info gauge\n\
         sluice_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let Some(stat) = read() else { return };
    let families: [(&str, &str, &str, String); 5] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, seconds.",
            format!("{}", stat.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, bytes.",
            stat.resident_bytes.to_string(),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size, bytes.",
            stat.virtual_bytes.to_string(),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, seconds.",
            format!("{}", stat.start_time),
        ),
        (
            "process_threads",
            "gauge",
            "Threads in the process.",
            stat.threads.to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    if let Some(fds) = open_fds() {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {fds}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis in it.
        let line = "4242 (sluice (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 150 0 0 20 0 7 0 5000 104857600 2560 18446744073709551615";
        let stat = parse_stat(line, 100.0, 4096, 1_700_000_000.0).unwrap();
        assert_eq!(stat.cpu_seconds, 4.0);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_time, 1_700_000_050.0);
        assert_eq!(stat.virtual_bytes, 104_857_600);
        assert_eq!(stat.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn this_process_reads_itself() {
        let stat = read().expect("/proc/self is readable on Linux");
        assert!(stat.resident_bytes > 0 && stat.threads >= 1, "{stat:?}");
    }
}
