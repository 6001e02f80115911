//! Kafka when things move: two engines sharing a group (one takes over
//! when the other stops), and a broker that is down at start and restarts
//! mid-stream.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// A broker of a test's own, to stop and start.
struct OwnBroker {
    port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    /// A free port, with no broker on it yet.
    fn reserve() -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnBroker { port, child: None }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let url = format!("tcp://{}", self.address());
        let child = Command::new(env("SLUICE_TANSU"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually(Duration::from_secs(10), "the broker to listen", || {
            std::net::TcpStream::connect(self.address()).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn two_engines_share_a_group_and_one_takes_over_when_the_other_stops() {
    let brokers = shared_broker();
    let (lines, counts, group) = (unique("lines"), unique("counts"), unique("group"));
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    let s = Scratch::new();
    s.write("p.toml", &wordcount(&brokers, &lines, &group, &counts));
    let reader = Reader::start(&brokers, &counts);
    let (log_a, log_b) = (s.path("log-a"), s.path("log-b"));

    let mut a = spawn_logged(&s, "p.toml", "log-a");
    eventually(
        Duration::from_secs(30),
        "engine A to own all partitions",
        || read(&log_a).contains(&format!("partitions assigned: {lines}[0,1,2,3]")),
    );
    let mut b = spawn_logged(&s, "p.toml", "log-b");
    let split = |log: &Path| {
        let log = read(log);
        log.lines()
            .rev()
            .find(|l| l.contains("partitions assigned"))
            .and_then(|l| l.split("partitions assigned: ").nth(1))
            .is_some_and(|assigned| assigned.matches(',').count() == 1)
    };
    eventually(
        Duration::from_secs(60),
        "the partitions to be split 2 + 2",
        || split(&log_a) && split(&log_b),
    );

    let first = sample_text(800, 51);
    produce(&brokers, &lines, &line_messages(&first, 4));
    wait_counted(
        &reader,
        &count_words(&first),
        &[log_a.clone(), log_b.clone()],
    );

    // A leaves; B takes over A's partitions.
    terminate(&a);
    assert!(
        wait_deadline(&mut a, Duration::from_secs(30)).success(),
        "{}",
        read(&log_a)
    );
    let second = sample_text(800, 52);
    produce(&brokers, &lines, &line_messages(&second, 4));
    let expected = sum_counts(&count_words(&first), &count_words(&second));
    wait_counted(&reader, &expected, &[log_a.clone(), log_b.clone()]);
    terminate(&b);
    assert!(wait_deadline(&mut b, Duration::from_secs(30)).success());

    let (log_a, log_b) = (read(&log_a), read(&log_b));
    assert!(
        log_b.contains(&format!("partitions assigned: {lines}[0,1,2,3]")),
        "B did not take over every partition:\n{log_b}"
    );
    // Both did part of the work: each read some records.
    let records_in = |log: &str| -> u64 {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(" records in"))
            .unwrap_or("");
        let before = line.split(" records in").next().unwrap_or("");
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (in_a, in_b) = (records_in(&log_a), records_in(&log_b));
    assert!(
        in_a > 0 && in_b > 0,
        "A read {in_a}, B read {in_b}:\n{log_a}\n----\n{log_b}"
    );
    assert!(
        in_a + in_b >= 1600,
        "A read {in_a}, B read {in_b}: lines were missed"
    );
}

#[test]
fn waits_for_a_broker_that_is_down_and_survives_its_restart() {
    let mut broker = OwnBroker::reserve();
    let brokers = broker.address();
    let (lines, counts) = (unique("lines"), unique("counts"));
    let s = Scratch::new();
    s.write(
        "p.toml",
        &wordcount(&brokers, &lines, &unique("group"), &counts),
    );
    let log = s.path("log");

    // No broker yet: the engine waits, says so, and does not exit.
    let mut child = spawn_logged(&s, "p.toml", "log");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice exited:\n{}",
        read(&log)
    );
    let waiting = read(&log);
    assert!(
        waiting.contains(&brokers) && waiting.contains("retrying"),
        "no log line about the unreachable broker:\n{waiting}"
    );

    broker.start();
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    let first = sample_text(400, 61);
    produce(&brokers, &lines, &line_messages(&first, 4));
    let reader = Reader::start(&brokers, &counts);
    wait_counted(&reader, &count_words(&first), &[log.clone()]);
    drop(reader);

    // The broker goes away (and, in memory, forgets everything).
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice exited:\n{}",
        read(&log)
    );
    broker.start();
    create_topic(&brokers, &lines, 4);
    create_topic(&brokers, &counts, 1);
    // Fewer lines than before, so the positions the engine remembers are
    // past the end of the new partitions and it starts them again (from
    // `earliest`), as it would after any out-of-range offset.
    let second = sample_text(200, 62);
    produce(&brokers, &lines, &line_messages(&second, 4));
    let reader = Reader::start(&brokers, &counts);
    wait_counted(&reader, &count_words(&second), &[log.clone()]);

    terminate(&child);
    let status = wait_deadline(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{}", read(&log));
}
