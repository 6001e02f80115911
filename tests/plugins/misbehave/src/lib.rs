//! `misbehave`: a test plugin that proves the engine contains a broken stage.
//!
//! It passes every record through unchanged (value, key, headers,
//! timestamp), except when some input record's value equals `when` (default
//! `boom`; `*` matches every batch); then, by `mode`:
//!
//! - `trap`: panics, which traps the instance;
//! - `loop`: loops forever (the engine's CPU limit must stop it);
//! - `grow`: allocates 1 MiB chunks, touched, without bound (the memory
//!   limit must stop it);
//! - `fail`: returns a `failed` error for the whole batch;
//! - `chatty`: prints 20,000 lines to stdout and logs 20,000 more;
//! - `sleep`: sleeps for an hour, then passes the batch through (the
//!   sandbox's timers fire at once, so the sleep must not hold the engine).
//!
//! `mode = "slow"` instead busy-spins `spin` iterations (default 200000) for
//! every record before passing it through: a slow stage, for backpressure
//! tests (the guest has no clock, so this is pure CPU).
//!
//! `tally = "true"` first adds the batch's record count to the state entry
//! `records` and emits `tally:<total>`, before misbehaving: the engine must
//! drop those writes when the batch then fails.
//!
//! `mode = "probe"` reaches for what the sandbox should withhold and emits,
//! per batch, one record per finding with no timestamp of its own (so the
//! engine stamps it with the batch time): `fs:<outcome of listing />`,
//! `open:<path>:<outcome of opening it>` for `/etc/passwd`,
//! `/proc/self/environ` and `.`, `tcp:<outcome of connecting to the
//! config's `connect` address>`, `udp:<outcome of binding a socket>`,
//! `dns:<outcome of resolving localhost>`, `env:<number of environment
//! variables>`, `clock:<wall clock in ms>`, `random:<first u64 from the OS
//! random source>`.
//!
//! `init_spin = N` busy-spins `N` iterations in `init`: a slow start-up.

use std::hint::black_box;

use sluice_sdk::{Batch, Config, Error, Output, Processor};

enum Mode {
    Trap,
    Loop,
    Grow,
    Fail,
    Slow,
    Probe,
    Sleep,
    Chatty,
}

struct Misbehave {
    mode: Mode,
    when: String,
    spin: u64,
    tally: bool,
    connect: String,
}

impl Processor for Misbehave {
    fn init(config: &Config) -> Result<Self, Error> {
        config.allow_only(&["mode", "when", "spin", "tally", "init_spin", "connect"])?;
        spin(config.parse_or("init_spin", 0)?);
        let mode = match config.require("mode")? {
            "trap" => Mode::Trap,
            "loop" => Mode::Loop,
            "grow" => Mode::Grow,
            "fail" => Mode::Fail,
            "slow" => Mode::Slow,
            "probe" => Mode::Probe,
            "sleep" => Mode::Sleep,
            "chatty" => Mode::Chatty,
            other => {
                return Err(Error::invalid_config(format!(
                    "`mode`: `{other}` is not one of `trap`, `loop`, `grow`, `fail`, `slow`, `probe`, `sleep`, `chatty`"
                )));
            }
        };
        let when = config.get_or("when", "boom").to_owned();
        let spin = config.parse_or("spin", 200_000)?;
        let tally = config.parse_or("tally", false)?;
        let connect = config.get_or("connect", "127.0.0.1:9").to_owned();
        Ok(Misbehave {
            mode,
            when,
            spin,
            tally,
            connect,
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        if let Mode::Slow = self.mode {
            for rec in batch.records() {
                spin(self.spin);
                out.forward(&rec);
            }
            return Ok(());
        }
        if let Mode::Probe = self.mode {
            probe(out, &self.connect);
            return Ok(());
        }
        if self.tally {
            let before: u64 = sluice_sdk::state::get("records")?
                .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            let total = before + batch.len() as u64;
            sluice_sdk::state::put("records", total.to_string())?;
            out.emit_fmt(format_args!("tally:{total}"), None, 0);
        }
        let trigger = batch
            .records()
            .find(|rec| self.when == "*" || rec.value() == self.when.as_bytes());
        if let Some(rec) = trigger {
            let index = rec.index();
            match self.mode {
                Mode::Trap => panic!(
                    "misbehave: asked to trap on record {index} (`{}`)",
                    self.when
                ),
                Mode::Loop => loop_forever(),
                Mode::Grow => grow_forever(),
                Mode::Fail => {
                    return Err(Error::failed(format!(
                        "misbehave: asked to fail on `{}`",
                        self.when
                    )));
                }
                Mode::Sleep => std::thread::sleep(std::time::Duration::from_secs(3600)),
                Mode::Chatty => {
                    for i in 0..20_000 {
                        println!("chatty line {i}");
                        sluice_sdk::log::info(&format!("chatty log {i}"));
                    }
                }
                Mode::Slow | Mode::Probe => unreachable!("handled above"),
            }
        }
        batch.records().for_each(|rec| out.forward(&rec));
        Ok(())
    }
}

sluice_sdk::export!(Misbehave);

/// `iterations` steps of an LCG the optimiser cannot see through.
fn spin(iterations: u64) {
    let mut x = 1u64;
    for i in 0..iterations {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    black_box(x);
}

fn loop_forever() -> ! {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn grow_forever() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled, so every page is really written, not just reserved.
        let mut chunk = Vec::with_capacity(CHUNK);
        chunk.resize(CHUNK, chunks.len() as u8 | 1);
        chunks.push(black_box(chunk));
    }
}

/// What the sandbox lets a plugin see of the world.
fn probe(out: &mut Output, connect: &str) {
    let fs = match std::fs::read_dir("/") {
        Ok(entries) => format!("fs:listed {} entries", entries.count()),
        Err(e) => format!("fs:denied ({e})"),
    };
    let mut findings = vec![fs];
    for path in ["/etc/passwd", "/proc/self/environ", "."] {
        findings.push(match std::fs::File::open(path) {
            Ok(_) => format!("open:{path}:opened"),
            Err(e) => format!("open:{path}:denied ({e})"),
        });
    }
    findings.push(match std::net::TcpStream::connect(connect) {
        Ok(_) => "tcp:connected".to_string(),
        Err(e) => format!("tcp:denied ({e})"),
    });
    findings.push(match std::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(_) => "udp:bound".to_string(),
        Err(e) => format!("udp:denied ({e})"),
    });
    findings.push({
        use std::net::ToSocketAddrs;
        match "localhost:80".to_socket_addrs() {
            Ok(_) => "dns:resolved".to_string(),
            Err(e) => format!("dns:denied ({e})"),
        }
    });
    let env = format!("env:{}", std::env::vars().count());
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut bytes = [0u8; 8];
    // std's HashMap keys come from the same WASI random source.
    let random = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        bytes.copy_from_slice(&h.finish().to_le_bytes());
        u64::from_le_bytes(bytes)
    };
    findings.extend([env, format!("clock:{clock}"), format!("random:{random}")]);
    for finding in findings {
        out.push(sluice_sdk::Record::new(finding));
    }
}
