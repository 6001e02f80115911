//! Idle costs: CPU and resident memory of a pipeline whose source has
//! nothing to read, per source type, with a word-count chain of two Wasm
//! stages behind it. Each runs for a warm-up, then its CPU time
//! (`/proc/PID/stat`) is sampled over a window; RSS is read at the end.
//! The baseline in the same run is a native process doing nothing (`sleep`),
//! measured the same way.
//!
//! Run: `cargo bench -p sluice --bench idle` (`SLUICE_BENCH_IDLE_SECS`
//! sets the window, 10 s by default; with `KAFKA_BOOTSTRAP` set, an idle
//! Kafka source is measured too).

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Warms up, then samples CPU over `window`; returns (% of one core, RSS MiB).
fn measure(child: &mut Child, window: Duration) -> (f64, f64) {
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id().to_string();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process ended during warm-up"
    );
    let before = support::cpu_seconds(&pid, false);
    std::thread::sleep(window);
    let used = support::cpu_seconds(&pid, false) - before;
    let rss = rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (100.0 * used / window.as_secs_f64(), rss)
}

fn pipeline(dir: &Path, name: &str, source: &str, guests: &Path) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"idle-{name}\"\nbatch_interval = \"100ms\"\n{source}\n\
             [[stages]]\nname = \"split\"\nplugin = '{}'\n\
             [[stages]]\nname = \"count\"\nplugin = '{}'\n\
             [[sinks]]\ntype = \"null\"\n",
            guests.join("word_split.wasm").display(),
            guests.join("word_count.wasm").display()
        ),
    )
    .unwrap();
    path
}

fn main() {
    let window = Duration::from_secs(
        std::env::var("SLUICE_BENCH_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let guests = support::guests();
    let scratch = tempdir();
    let mut rows: Vec<(String, (f64, f64))> = Vec::new();

    let mut sleeper = Command::new("sleep").arg("3600").spawn().unwrap();
    rows.push((
        "native baseline (`sleep`)".into(),
        measure(&mut sleeper, window),
    ));

    std::fs::create_dir_all(scratch.join("in")).unwrap();
    let source = format!(
        "[[sources]]\ntype = \"directory\"\npath = '{}'",
        scratch.join("in").display()
    );
    let path = pipeline(&scratch, "directory", &source, &guests);
    let mut child = support::sluice_run(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rows.push((
        "directory (empty folder)".into(),
        measure(&mut child, window),
    ));

    let path = pipeline(&scratch, "stdin", "[[sources]]\ntype = \"stdin\"", &guests);
    let mut child = support::sluice_run(&path)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rows.push(("stdin (open, silent)".into(), measure(&mut child, window)));

    // A server that accepts and never sends.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in server.incoming().flatten() {
            held.push(stream);
        }
    });
    let source = format!("[[sources]]\ntype = \"socket\"\naddress = \"{address}\"");
    let path = pipeline(&scratch, "socket", &source, &guests);
    let mut child = support::sluice_run(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rows.push((
        "socket (connected, silent)".into(),
        measure(&mut child, window),
    ));

    if let Ok(brokers) = std::env::var("KAFKA_BOOTSTRAP") {
        let source = format!(
            "[[sources]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"idle-bench\"]\ngroup = \"idle-bench-{}\"",
            std::process::id()
        );
        let path = pipeline(&scratch, "kafka", &source, &guests);
        let mut child = support::sluice_run(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rows.push(("kafka (empty topic)".into(), measure(&mut child, window)));
    }

    println!(
        "idle costs over {} s after a 2 s warm-up (100 ms batches, two Wasm stages):",
        window.as_secs()
    );
    println!(
        "  {:<28} {:>12} {:>10}",
        "source", "CPU (% core)", "RSS (MiB)"
    );
    for (name, (cpu, rss)) in rows {
        println!("  {name:<28} {cpu:>12.2} {rss:>10.1}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
