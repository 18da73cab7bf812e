//! Measurement shared by the trexlock cluster bench (`benches/cluster.rs`)
//! and the etcd driver (`benches/etcd-driver`), so that both systems are
//! timed, counted and printed by the same code.
//!
//! Every load loop runs inside a [`Window`]: a warm-up that is not
//! measured, then a measured span, then it stops; each client also stops
//! after [`MAX_OPS_PER_CLIENT`] operations, so a loop is bounded in time and
//! in count whatever the system under test does.

#![allow(dead_code)] // Each includer uses a different part.

use std::time::{Duration, Instant};

/// Hard cap on the operations one client performs in one case.
pub const MAX_OPS_PER_CLIENT: u64 = 2_000_000;

/// When a case warms up, measures and stops.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Operations finishing before this are warm-up.
    pub measure_from: Instant,
    /// No operation starts after this.
    pub end: Instant,
}

impl Window {
    /// A window starting now.
    pub fn new(warmup: Duration, measure: Duration) -> Window {
        let now = Instant::now();
        Window {
            measure_from: now + warmup,
            end: now + warmup + measure,
        }
    }

    /// True while clients should keep starting operations.
    pub fn running(&self) -> bool {
        Instant::now() < self.end
    }

    /// The measured span.
    pub fn span(&self) -> Duration {
        self.end - self.measure_from
    }
}

/// What one client saw: latencies of the operations that completed inside
/// the measured span, and errors.
#[derive(Debug, Default)]
pub struct Recorder {
    latencies_us: Vec<u32>,
    errors: u64,
    done: u64,
}

impl Recorder {
    /// Records an operation that started at `started` and just finished.
    pub fn ok(&mut self, window: &Window, started: Instant) {
        self.done += 1;
        let now = Instant::now();
        if now >= window.measure_from && now <= window.end {
            let us = now.duration_since(started).as_micros();
            self.latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }

    /// Records a failed operation (counted whenever it happens after the
    /// warm-up).
    pub fn error(&mut self, window: &Window) {
        self.done += 1;
        if Instant::now() >= window.measure_from {
            self.errors += 1;
        }
    }

    /// True while this client may start another operation.
    pub fn go_on(&self, window: &Window) -> bool {
        window.running() && self.done < MAX_OPS_PER_CLIENT
    }
}

/// The merged numbers of one case.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Operations completed in the measured span.
    pub ops: u64,
    /// Operations per second over the measured span.
    pub ops_per_s: f64,
    /// Latency percentiles and maximum, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Failed operations after the warm-up.
    pub errors: u64,
}

/// Merges the clients' recorders.
pub fn merge(window: &Window, recorders: Vec<Recorder>) -> Stats {
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    for r in recorders {
        all.extend_from_slice(&r.latencies_us);
        errors += r.errors;
    }
    all.sort_unstable();
    let pick = |q: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
        u64::from(all[i])
    };
    Stats {
        ops: all.len() as u64,
        ops_per_s: all.len() as f64 / window.span().as_secs_f64(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        max_us: all.last().map_or(0, |v| u64::from(*v)),
        errors,
    }
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat` (`self` for this process); zero if it is gone.
pub fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name (field 2) may hold spaces: count from after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU used by a set of processes (the servers) and by this one (the
/// load generator) between [`CpuMeter::start`] and [`CpuMeter::stop`].
pub struct CpuMeter {
    pids: Vec<String>,
    servers: Duration,
    client: Duration,
}

impl CpuMeter {
    /// Starts counting for `pids` and this process.
    pub fn start(pids: Vec<String>) -> CpuMeter {
        let servers = pids.iter().map(|p| cpu_time(p)).sum();
        CpuMeter {
            pids,
            servers,
            client: cpu_time("self"),
        }
    }

    /// (servers, client) CPU used since the start.
    pub fn stop(&self) -> (Duration, Duration) {
        let servers: Duration = self.pids.iter().map(|p| cpu_time(p)).sum();
        (
            servers.saturating_sub(self.servers),
            cpu_time("self").saturating_sub(self.client),
        )
    }
}

/// Prints the result of one case: the `RESULT` line the comparison script
/// reads, then a `COST` line with the maximum latency and the CPU used.
pub fn report(system: &str, case: &str, clients: usize, stats: &Stats, cpu: (Duration, Duration)) {
    println!(
        "RESULT system={system} case={case} clients={clients} ops_per_s={:.0} p50_us={} p99_us={} errors={}",
        stats.ops_per_s, stats.p50_us, stats.p99_us, stats.errors
    );
    let per_op = |d: Duration| {
        if stats.ops == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e6 / stats.ops as f64
        }
    };
    println!(
        "COST system={system} case={case} clients={clients} ops={} max_us={} server_cpu_ms={} client_cpu_ms={} server_cpu_us_per_op={:.1} client_cpu_us_per_op={:.1}",
        stats.ops,
        stats.max_us,
        cpu.0.as_millis(),
        cpu.1.as_millis(),
        per_op(cpu.0),
        per_op(cpu.1),
    );
}

/// Command-line settings common to both drivers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Cases to run, as `NAME` or `NAME:CLIENTS`.
    pub cases: Vec<(String, Option<usize>)>,
    /// Warm-up before each measured span.
    pub warmup: Duration,
    /// Length of each measured span.
    pub measure: Duration,
    /// Everything else, as `--key value` pairs.
    pub extra: Vec<(String, String)>,
}

impl Settings {
    /// Parses `--case NAME[:K]` (repeatable), `--secs S` (measured span,
    /// fractional allowed), `--warmup S`; other `--key value` pairs are
    /// kept in `extra`. Lone flags (such as the `--bench` cargo passes) are
    /// ignored.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Settings, String> {
        let mut settings = Settings {
            cases: Vec::new(),
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(3),
            extra: Vec::new(),
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let Some(key) = arg.strip_prefix("--") else {
                continue;
            };
            let value = match args.peek() {
                Some(v) if !v.starts_with("--") => args.next().unwrap_or_default(),
                _ => continue,
            };
            let secs = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s < 600.0)
                    .map(Duration::from_secs_f64)
                    .ok_or(format!("--{key} wants seconds, got {v:?}"))
            };
            match key {
                "case" => {
                    let (name, clients) = match value.split_once(':') {
                        Some((n, k)) => (
                            n.to_owned(),
                            Some(
                                k.parse()
                                    .map_err(|_| format!("bad client count in {value}"))?,
                            ),
                        ),
                        None => (value.clone(), None),
                    };
                    settings.cases.push((name, clients));
                }
                "secs" => settings.measure = secs(&value)?,
                "warmup" => settings.warmup = secs(&value)?,
                _ => settings.extra.push((key.to_owned(), value)),
            }
        }
        Ok(settings)
    }

    /// The value of `--key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The cases run when none is named, with their default client counts.
pub const DEFAULT_CASES: [(&str, usize); 7] = [
    ("uncontended", 1),
    ("uncontended", 16),
    ("uncontended", 64),
    ("contended", 16),
    ("renew", 64),
    ("renew_session", 64),
    ("failover", 16),
];

/// The latency of one successful acquire in the single-client case, kept
/// apart from the acquire+release cycle for the `p50_single` ratio.
pub fn report_acquire_only(system: &str, window: &Window, acquires: Vec<Recorder>) {
    let stats = merge(window, acquires);
    println!(
        "RESULT system={system} case=acquire clients=1 ops_per_s={:.0} p50_us={} p99_us={} errors={}",
        stats.ops_per_s, stats.p50_us, stats.p99_us, stats.errors
    );
}

/// Prints the failover measurement.
pub fn report_failover(system: &str, recovery: Option<Duration>) {
    match recovery {
        Some(d) => println!("FAILOVER system={system} recovery_ms={}", d.as_millis()),
        None => println!("FAILOVER system={system} recovery_ms=none"),
    }
}
