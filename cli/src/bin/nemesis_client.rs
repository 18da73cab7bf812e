//! `trexlock-nemesis-client`: a lease client in a process of its own, driven
//! by the nemesis harness (`cli/tests/nemesis.rs`) over stdin and stdout.
//! It is a test helper, not a tool: it exists so that the harness can
//! SIGSTOP a client while it holds a lease, which needs a separate process.
//!
//! ```text
//! trexlock-nemesis-client --cluster C --servers ADDR,ADDR,...
//! ```
//!
//! One command per stdin line, one answer per stdout line. Times are
//! nanoseconds of the system-wide `CLOCK_MONOTONIC`, so the harness can
//! compare them across processes.
//!
//! | command | answers |
//! | --- | --- |
//! | `acquire NAME TTL_MS WAIT_MS OWNER` | `granted STAMP SENT ACKED BELIEF_END`, `held OWNER STAMP`, `timeout`, `error KIND` |
//! | `renew NAME` | `renewed BELIEF_END`, `lost AT`, `error KIND` |
//! | `write NAME GAP_MS SEQ` | `invalid`, or the line `W NAME STAMP SEQ CHECKED OWNER` (the fenced write, answered `ok` or `refused` on stdin) then `done ok` / `done refused` |
//! | `release NAME` | `released SENT ACKED`, `lost SENT`, `error KIND SENT` |
//! | `drop NAME` | `dropped AT` (abandons the lease without releasing it) |
//! | `quit` | exits |
//!
//! Each acquire names its owner: the harness gives every attempt a fresh
//! one, so that a grant the cluster made for an attempt that got no answer
//! (the serving node keeps forwarding it after the client gave up) is never
//! returned to a later attempt as a reentrant grant with an old stamp.
//!
//! `BELIEF_END` is `LeaseHandle::expire_time_unsafe()`: until then the
//! holder believes it holds the lease, and the cluster must not grant it to
//! anyone else. `CHECKED` is when `is_valid_with_safety_gap` said yes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};
use trexlock_lease::remote::{self, RemoteConfig, RemoteHandle};
use trexlock_lease::{LeaseError, LeaseHandle, TryAcquire};

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock `Instant` reads on Linux,
/// shared by every process on the machine.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// An `Instant` on the shared clock (to within the microsecond between the
/// two readings).
fn instant_ns(at: Instant) -> u64 {
    let (now, now_ns) = (Instant::now(), mono_ns());
    if at >= now {
        now_ns + u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX / 2)
    } else {
        now_ns.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

fn kind(e: &LeaseError) -> &'static str {
    match e {
        LeaseError::NoLeader => "no-leader",
        LeaseError::Timeout => "timeout",
        LeaseError::LeaseLost { .. } => "lost",
        LeaseError::StaleStamp { .. } => "stale",
        LeaseError::Held { .. } => "held",
        LeaseError::LockDelay { .. } => "lock-delay",
        LeaseError::Busy { .. } => "busy",
        LeaseError::Invalid(_) => "invalid",
        LeaseError::Refused(_) => "refused",
        LeaseError::Random(_) => "random",
        LeaseError::Stopped => "stopped",
        LeaseError::Connect(_) => "connect",
        LeaseError::SessionLost { .. } => "session-lost",
    }
}

struct Args {
    cluster: String,
    servers: Vec<SocketAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut cluster, mut servers) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cluster" => cluster = Some(value),
            "--servers" => {
                let parsed: Result<Vec<SocketAddr>, _> = value.split(',').map(str::parse).collect();
                servers = Some(parsed.map_err(|e| format!("--servers: {e}"))?);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        cluster: cluster.ok_or("--cluster is required")?,
        servers: servers.ok_or("--servers is required")?,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("trexlock-nemesis-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trexlock-nemesis-client: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Session {
    node: RemoteHandle,
    /// Lease name -> (owner of the attempt that got it, its handle).
    held: HashMap<String, (String, LeaseHandle)>,
    input: Lines<BufReader<Stdin>>,
    output: tokio::io::Stdout,
}

async fn run(args: Args) -> Result<(), String> {
    // The cluster may be mid-restart when the harness starts us: keep
    // trying for a while (bounded).
    let mut handle = None;
    for _ in 0..200 {
        let config = RemoteConfig::new(args.cluster.clone(), args.servers.clone());
        if let Ok(h) = remote::connect(config).await {
            handle = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handle = handle.ok_or("cannot reach any server")?;
    let mut session = Session {
        node: handle,
        held: HashMap::new(),
        input: BufReader::new(tokio::io::stdin()).lines(),
        output: tokio::io::stdout(),
    };
    session.say("ready").await?;
    while let Some(line) = session.input.next_line().await.map_err(|e| e.to_string())? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["acquire", name, ttl, wait, owner] => {
                session.acquire(name, ms(ttl)?, ms(wait)?, owner).await
            }
            ["renew", name] => session.renew(name).await,
            ["write", name, gap, seq] => session.write(name, ms(gap)?, seq).await?,
            ["release", name] => session.release(name).await,
            ["drop", name] => {
                session.held.remove(*name);
                format!("dropped {}", mono_ns())
            }
            ["quit"] => return Ok(()),
            _ => format!("error unknown-command {line:?}"),
        };
        session.say(&answer).await?;
    }
    Ok(())
}

fn ms(word: &str) -> Result<Duration, String> {
    word.parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("not a number of milliseconds: {word}"))
}

impl Session {
    async fn say(&mut self, line: &str) -> Result<(), String> {
        let line = format!("{line}\n");
        self.output
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.output.flush().await.map_err(|e| e.to_string())
    }

    async fn acquire(&mut self, name: &str, ttl: Duration, wait: Duration, owner: &str) -> String {
        if self.held.contains_key(name) {
            return "error already-held".into();
        }
        let client = self.node.client(owner);
        let sent = mono_ns();
        let result = if wait.is_zero() {
            client.try_acquire(name, ttl).await
        } else {
            client
                .acquire(name, ttl, wait)
                .await
                .map(TryAcquire::Acquired)
        };
        let acked = mono_ns();
        match result {
            Ok(TryAcquire::Acquired(lease)) => {
                let answer = format!(
                    "granted {} {sent} {acked} {}",
                    lease.stamp(),
                    instant_ns(lease.expire_time_unsafe())
                );
                self.held.insert(name.to_owned(), (owner.to_owned(), lease));
                answer
            }
            Ok(TryAcquire::Held(h)) | Err(LeaseError::Held { holder: h, .. }) => {
                format!("held {} {}", h.owner, h.stamp)
            }
            Err(LeaseError::Timeout) if !wait.is_zero() => "timeout".into(),
            Err(e) => format!("error {}", kind(&e)),
        }
    }

    async fn renew(&mut self, name: &str) -> String {
        let Some((_, lease)) = self.held.get(name) else {
            return "error not-held".into();
        };
        match lease.renew().await {
            Ok(()) => format!("renewed {}", instant_ns(lease.expire_time_unsafe())),
            Err(LeaseError::LeaseLost { .. }) => {
                self.held.remove(name);
                format!("lost {}", mono_ns())
            }
            Err(e) => format!("error {}", kind(&e)),
        }
    }

    /// One critical section: the validity check, then the fenced write.
    async fn write(&mut self, name: &str, gap: Duration, seq: &str) -> Result<String, String> {
        let Some((owner, lease)) = self.held.get(name) else {
            return Ok("error not-held".into());
        };
        if !lease.is_valid_with_safety_gap(gap) {
            return Ok("invalid".into());
        }
        let checked = mono_ns();
        let request = format!("W {name} {} {seq} {checked} {owner}", lease.stamp());
        self.say(&request).await?;
        let reply = self
            .input
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("stdin closed during a write")?;
        Ok(format!("done {reply}"))
    }

    async fn release(&mut self, name: &str) -> String {
        let Some((_, lease)) = self.held.remove(name) else {
            return "error not-held".into();
        };
        let sent = mono_ns();
        match lease.release().await {
            Ok(()) => format!("released {sent} {}", mono_ns()),
            Err(LeaseError::LeaseLost { .. }) => format!("lost {sent}"),
            Err(e) => format!("error {} {sent}", kind(&e)),
        }
    }
}
