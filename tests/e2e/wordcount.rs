//! Word count (`word-split` → `word-count`) end to end, over a watched
//! folder, a TCP socket and standard input, checked exactly against counts
//! computed in the test.

use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

fn wordcount_pipeline(source: &str, sink: &str) -> String {
    format!(
        r#"
name = "wordcount"
batch_interval = "100ms"

{source}

[[stages]]
name = "split"
plugin = '{}'

[[stages]]
name = "count"
plugin = '{}'

{sink}
"#,
        plugin("word_split").display(),
        plugin("word_count").display()
    )
}

const DIR_SINK: &str = "[[sinks]]\ntype = \"directory\"\npath = \"output\"\nformat = \"jsonl\"";

#[test]
fn directory_source_counts_every_word_of_every_file_once() {
    let s = Scratch::new();
    s.mkdir("input");
    let mut all_text = String::new();
    // Files present before start.
    for i in 0..3 {
        let text = sample_text(200, i);
        s.write(&format!("input/early-{i}.txt"), &text);
        all_text.push_str(&text);
    }
    let pipeline = wordcount_pipeline(
        "[[sources]]\ntype = \"directory\"\npath = \"input\"\nsettle = \"500ms\"",
        DIR_SINK,
    );
    s.write("p.toml", &pipeline);
    let mut child = s
        .sluice(&["run", "p.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // A file that arrives later by rename from a hidden temporary name.
    std::thread::sleep(Duration::from_millis(400));
    let renamed = sample_text(300, 10);
    s.write("input/.incoming.txt", &renamed);
    std::fs::rename(s.path("input/.incoming.txt"), s.path("input/renamed.txt")).unwrap();
    all_text.push_str(&renamed);

    // A file written slowly in place: must not be read half-way.
    let slow = sample_text(300, 11);
    let (first, second) = slow.split_at(slow.len() / 2);
    let mut f = std::fs::File::create(s.path("input/slow.txt")).unwrap();
    f.write_all(first.as_bytes()).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f.write_all(second.as_bytes()).unwrap();
    drop(f);
    all_text.push_str(&slow);

    let expected = count_words(&all_text);
    let output = s.path("output");
    eventually(Duration::from_secs(30), "every word counted", || {
        totals(&read_jsonl_dir(&output)) == expected
    });
    // Nothing is read twice: the totals stay exact a while longer.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(totals(&read_jsonl_dir(&output)), expected);

    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn socket_source_counts_lines_across_reconnects() {
    let s = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let first = sample_text(500, 21);
    let second = sample_text(500, 22);
    let (a, b) = (first.clone(), second.clone());
    let server = std::thread::spawn(move || {
        // First connection: send, then hang up mid-stream.
        let (mut conn, _) = listener.accept().unwrap();
        for line in a.lines() {
            writeln!(conn, "{line}").unwrap();
        }
        drop(conn);
        // sluice reconnects; the second connection sends the rest.
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b.as_bytes()).unwrap();
    });
    let pipeline = wordcount_pipeline(
        &format!("[[sources]]\ntype = \"socket\"\naddress = \"{address}\""),
        DIR_SINK,
    );
    s.write("p.toml", &pipeline);
    let child = s
        .sluice(&["run", "p.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.join().unwrap();
    let expected = count_words(&format!("{first}{second}"));
    let output = s.path("output");
    eventually(Duration::from_secs(30), "every word counted", || {
        totals(&read_jsonl_dir(&output)) == expected
    });
    terminate(&child);
    let finished = wait_output(child, Duration::from_secs(10));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("reconnecting"),
        "{}",
        finished.stderr
    );
}

#[test]
fn stdin_pipeline_runs_as_a_batch_job_and_exits_zero() {
    let s = Scratch::new();
    let text = sample_text(2000, 31);
    let pipeline = wordcount_pipeline(
        "[[sources]]\ntype = \"stdin\"",
        "[[sinks]]\ntype = \"console\"\nformat = \"text\"",
    );
    s.write("p.toml", &pipeline);
    let finished = run_with_input(s.sluice(&["run", "p.toml"]), &text, Duration::from_secs(30));
    assert!(finished.status.success(), "{}", finished.stderr);
    let mut counted = std::collections::BTreeMap::new();
    for line in finished.stdout.lines() {
        let (word, n) = line
            .split_once('\t')
            .expect("text output is word<TAB>count");
        *counted.entry(word.to_string()).or_insert(0) += n.parse::<u64>().unwrap();
    }
    assert_eq!(counted, count_words(&text));
    // The figures Spark users know are logged.
    for figure in [
        "input rate",
        "processing",
        "scheduling delay",
        "total delay",
    ] {
        assert!(
            finished.stderr.contains(figure),
            "no `{figure}` in the log:\n{}",
            finished.stderr
        );
    }
}
