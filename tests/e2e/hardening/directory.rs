//! The `directory` source, probed as an attacker and a new user would: an
//! idle folder costs no CPU, a clean restart reads nothing again, names that
//! are not UTF-8 stay apart, and links out of the folder are not followed.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

/// `directory` source → `directory` sink (text), no stages.
fn passthrough(s: &Scratch, delivery: &str, extra_source_keys: &str) {
    s.mkdir("in");
    s.write(
        "p.toml",
        &format!(
            "name = \"pass\"\nbatch_interval = \"100ms\"\ndelivery = \"{delivery}\"\n\
             [[sources]]\ntype = \"directory\"\npath = \"in\"\nsettle = \"200ms\"\n{extra_source_keys}\n\
             [[sinks]]\ntype = \"directory\"\npath = \"out\"\nformat = \"text\"\n"
        ),
    );
}

fn start(s: &Scratch) -> Child {
    s.sluice(&["run", "p.toml", "--control", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops a run with SIGTERM and returns its log; it must exit 0.
fn stop(mut child: Child) -> String {
    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");
    log
}

/// Every line of every output file, sorted.
fn output_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().as_bytes().starts_with(b".") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after `)`.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Finding 1: an idle folder kept a core busy (~480 ticks in 5 s) because
/// each listing of the folder raised an event that woke the next one.
#[test]
fn an_idle_folder_costs_almost_no_cpu() {
    let s = Scratch::new();
    passthrough(&s, "at-least-once", "");
    let child = start(&s);
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_ticks(child.id()) - before;
    // 400 ticks would be one core: allow 5 % of one.
    assert!(
        used < 20,
        "an idle directory pipeline used {used} ticks in 4 s"
    );
    // It still notices a new file at once.
    s.write("in/a.txt", "one\ntwo\n");
    eventually(Duration::from_secs(10), "the file's lines", || {
        output_lines(&s.path("out")).len() == 2
    });
    stop(child);
}

/// Writing to a file already read (appending, or renaming a new file onto
/// its name) must not wake the source into a loop: files are read once.
#[test]
fn changing_a_file_already_read_costs_no_cpu() {
    let s = Scratch::new();
    passthrough(&s, "at-least-once", "");
    s.write("in/a.txt", "one\n");
    let child = start(&s);
    eventually(Duration::from_secs(10), "a.txt", || {
        output_lines(&s.path("out")).len() == 1
    });
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.path("in/a.txt"))
            .unwrap();
        writeln!(f, "two").unwrap();
    }
    s.write("in/.b.tmp", "three\n");
    std::fs::rename(s.path("in/.b.tmp"), s.path("in/a.txt")).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(child.id()) - before;
    assert!(
        used < 20,
        "the source used {used} ticks in 3 s after a read file changed"
    );
    stop(child);
    assert_eq!(output_lines(&s.path("out")), ["one"], "files are read once");
}

/// `existing = false` skips what was in the folder before the first run
/// only: after a crash, a file that came while the engine was down is
/// read, not taken for one that was there before.
#[test]
fn existing_false_still_reads_what_came_while_the_engine_was_down() {
    let s = Scratch::new();
    passthrough(&s, "at-least-once", "existing = false");
    s.write("in/old.txt", "old\n");
    let mut child = start(&s);
    std::thread::sleep(Duration::from_millis(500));
    s.write("in/new1.txt", "new1\n");
    eventually(Duration::from_secs(10), "new1.txt", || {
        output_lines(&s.path("out")) == ["new1"]
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    s.write("in/new2.txt", "new2\n");
    let child = start(&s);
    eventually(Duration::from_secs(10), "new2.txt", || {
        output_lines(&s.path("out")).contains(&"new2".to_string())
    });
    stop(child);
    assert_eq!(output_lines(&s.path("out")), ["new1", "new2"]);
}

/// Finding 2: a clean restart read every file again, so every line came
/// out twice.
#[test]
fn a_clean_restart_reads_no_file_again() {
    let s = Scratch::new();
    passthrough(&s, "at-least-once", "");
    s.write("in/a.txt", "a1\na2\n");
    let child = start(&s);
    eventually(Duration::from_secs(10), "a.txt's lines", || {
        output_lines(&s.path("out")).len() == 2
    });
    stop(child);
    let child = start(&s);
    s.write("in/b.txt", "b1\n");
    eventually(Duration::from_secs(10), "b.txt's line", || {
        output_lines(&s.path("out")).contains(&"b1".to_string())
    });
    // Long enough for a re-read of a.txt to have shown.
    std::thread::sleep(Duration::from_millis(800));
    let log = stop(child);
    assert_eq!(output_lines(&s.path("out")), ["a1", "a2", "b1"], "{log}");
    assert!(!log.contains("read a.txt"), "a.txt was read again:\n{log}");
}

/// Finding 3: file names were keyed by a lossy string, so under
/// exactly-once `caf\xe9.txt` came out again on a clean second run, and a
/// new `a\xe8.txt` (lossily equal to an earlier `a\xe9.txt`) lost lines.
#[test]
fn names_that_are_not_utf8_are_read_exactly_once_each() {
    let s = Scratch::new();
    passthrough(&s, "exactly-once", "");
    let name = |bytes: &[u8]| s.path("in").join(OsStr::from_bytes(bytes));
    std::fs::write(name(b"caf\xe9.txt"), "cafe1\ncafe2\n").unwrap();
    std::fs::write(name(b"a\xe9.txt"), "e9-1\ne9-2\n").unwrap();
    let child = start(&s);
    eventually(Duration::from_secs(10), "both files", || {
        output_lines(&s.path("out")).len() == 4
    });
    stop(child);
    let child = start(&s);
    std::fs::write(name(b"a\xe8.txt"), "e8-1\ne8-2\ne8-3\n").unwrap();
    eventually(Duration::from_secs(10), "a\\xe8.txt", || {
        output_lines(&s.path("out")).len() >= 7
    });
    std::thread::sleep(Duration::from_millis(800));
    let log = stop(child);
    assert_eq!(
        output_lines(&s.path("out")),
        ["cafe1", "cafe2", "e8-1", "e8-2", "e8-3", "e9-1", "e9-2"],
        "{log}"
    );
    assert!(log.contains("read a\\xe8.txt (3 lines)"), "{log}");
}

/// Finding 4: links in the folder to `/etc/passwd` or `/proc/self/environ`
/// were read, handing the engine's environment to plugins and sinks.
#[test]
fn links_out_of_the_folder_are_skipped_unless_allowed() {
    let s = Scratch::new();
    passthrough(&s, "at-least-once", "");
    s.write("secret.txt", "SECRET\n");
    s.write("in/inside.txt", "inside\n");
    std::os::unix::fs::symlink(s.path("secret.txt"), s.path("in/secret-link.txt")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", s.path("in/environ")).unwrap();
    std::os::unix::fs::symlink(s.path("in/inside.txt"), s.path("in/inside-link.txt")).unwrap();
    // A FIFO would block a reader that opened it.
    let fifo = std::ffi::CString::new(s.path("in/pipe").into_os_string().into_vec()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc_mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut cmd = s.sluice(&["run", "p.toml", "--control", "off"]);
    cmd.env("SLUICE_TEST_SECRET", "do-not-leak");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "the files inside", || {
        output_lines(&s.path("out")).len() == 2
    });
    std::thread::sleep(Duration::from_millis(800));
    let log = stop(child);
    let lines = output_lines(&s.path("out"));
    assert_eq!(lines, ["inside", "inside"], "{log}");
    assert!(
        log.contains("skipped secret-link.txt: it links to"),
        "{log}"
    );
    assert!(log.contains("skipped environ: it links to"), "{log}");
    assert!(!lines.iter().any(|l| l.contains("do-not-leak")));

    // With `follow_links`, the link to the secret is the user's choice.
    let s = Scratch::new();
    passthrough(&s, "at-least-once", "follow_links = true");
    s.write("secret.txt", "SECRET\n");
    std::os::unix::fs::symlink(s.path("secret.txt"), s.path("in/secret-link.txt")).unwrap();
    let child = start(&s);
    eventually(Duration::from_secs(10), "the followed link", || {
        output_lines(&s.path("out")) == ["SECRET"]
    });
    stop(child);
}

unsafe extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}
