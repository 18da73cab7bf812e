//! The disk's flush latency as a journal sees it, after an idle gap and
//! back to back: the context every cluster benchmark result needs, since a
//! consensus round waits for a flush on a quorum of nodes.
//!
//! ```text
//! cargo bench --bench flush                  # 1 s per pattern
//! cargo bench --bench flush -- --secs 3
//! cargo bench --bench flush -- --keep-busy 120   # only flush back to back, 120 s
//! ```
//!
//! Each pattern appends records of a typical 64-client batch (3 542 bytes,
//! at unaligned offsets, as the redb journal's write-ahead log does) to a
//! zero-filled 1 MiB file in a temporary directory and makes each one
//! durable with `fdatasync`, sleeping `gap_us` between a flush and the
//! next write. With `neighbour=busy` a second thread flushes another file
//! back to back meanwhile, as other nodes' journals on the same disk do.
//! One line per pattern:
//!
//! ```text
//! FLUSH gap_us=G neighbour=idle|busy syncs=N p50_us=A p90_us=B p99_us=C
//! ```
//!
//! A device whose p50 grows far beyond its back-to-back figure after a
//! gap of a few hundred microseconds charges that much to every consensus
//! round whose flushes find it idle; on such a device a closed-loop load's
//! throughput depends on whether the nodes' flushes happen to keep it busy.
//! `--keep-busy SECS` prints nothing and only flushes back to back for that
//! long: run beside a benchmark, it shows what the benchmark measures on a
//! device that never idles.
//!
//! A last line measures what a consensus round waits for when three nodes
//! share this disk, as in the cluster benchmarks: three threads, one file
//! each, write and flush a record at the same moment, `gap_us` after the
//! previous round ended, and the line gives how long the second of the
//! three took to finish (a leader needs its own vote and one follower's):
//!
//! ```text
//! FLUSH quorum=2of3 gap_us=G rounds=N p50_us=A p90_us=B p99_us=C
//! ```
//!
//! Less the cost of waking the threads (what the line shows on a memory
//! file system), no request of a three-node cluster on this disk is
//! answered faster than that, whatever the code around the journal does.
//!
//! The next line is the other half of that floor: the round trip of a
//! small message (200 bytes, about an acquire) over a loopback TCP
//! connection between two threads, each blocked in `read` until it
//! arrives, as a node and its client are:
//!
//! ```text
//! LOOPBACK rtt bytes=200 rounds=N p50_us=A p90_us=B p99_us=C
//! ```
//!
//! An acquire waits for the client's round trip to the leader, the quorum
//! flush, and a follower's vote on its way back (half a round trip; the
//! Accept's way out overlaps the leader's own flush). Those pieces do not
//! simply add up (a follower's flush starts after the leader's, not with
//! it), so the last line measures them together, as the least any
//! replicated write does: a client thread sends a 200-byte request to a
//! leader, which forwards it to two follower threads, appends it to its
//! own file and flushes, and answers once its flush and the first
//! follower's (append, flush, 8-byte vote back) are done. Everything is loopback TCP with
//! Nagle off and blocking threads, the leader a current-thread tokio
//! runtime that waits for both followers' votes at once, as a node does;
//! there is no encoding, no consensus state and no lease table, so a real
//! node's round can only be slower:
//!
//! ```text
//! REPLICATED round bytes=200 rounds=N p50_us=A p90_us=B p99_us=C
//! ```
//!
//! `benches/compare_etcd.sh` prints this p50 as its FLOOR line.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const FILE_BYTES: u64 = 1024 * 1024;
const RECORD_BYTES: usize = 3542;

fn main() -> ExitCode {
    match options().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flush: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What to do: measure each pattern for a span, or keep the disk busy.
enum Mode {
    Measure(Duration),
    KeepBusy(Duration),
}

fn options() -> Result<Mode, String> {
    let mut mode = Mode::Measure(Duration::from_secs(1));
    let mut args = std::env::args().skip(1);
    let secs = |args: &mut dyn Iterator<Item = String>, name: &str| {
        args.next()
            .and_then(|v| v.parse().ok())
            .filter(|s: &f64| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or(format!("{name} wants a positive number of seconds"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => mode = Mode::Measure(secs(&mut args, "--secs")?),
            "--keep-busy" => mode = Mode::KeepBusy(secs(&mut args, "--keep-busy")?),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(mode)
}

fn run(mode: Mode) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let file = zeroed(&dir.path().join("log"))?;
    let span = match mode {
        Mode::Measure(span) => span,
        Mode::KeepBusy(span) => return flushes(&file, 0, span).map(drop),
    };
    for gap_us in [0, 200, 1000] {
        report(gap_us, "idle", &flushes(&file, gap_us, span)?);
    }
    let neighbour = zeroed(&dir.path().join("neighbour"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut offset = 0;
            while !stop.load(Ordering::Relaxed) {
                if append(&neighbour, &mut offset).is_err() {
                    return;
                }
            }
        })
    };
    let result = flushes(&file, 1000, span);
    stop.store(true, Ordering::Relaxed);
    busy.join().map_err(|_| "the neighbour thread panicked")?;
    report(1000, "busy", &result?);
    let quorum = quorum_rounds(dir.path(), QUORUM_GAP_US, span)?;
    println!(
        "FLUSH quorum=2of3 gap_us={QUORUM_GAP_US} rounds={} {}",
        quorum.len(),
        percentiles(&quorum)
    );
    let trips = round_trips(span)?;
    println!(
        "LOOPBACK rtt bytes={MESSAGE_BYTES} rounds={} {}",
        trips.len(),
        percentiles(&trips)
    );
    let rounds = replicated_rounds(dir.path(), span)?;
    println!(
        "REPLICATED round bytes={MESSAGE_BYTES} rounds={} {}",
        rounds.len(),
        percentiles(&rounds)
    );
    Ok(())
}

/// The size of a vote: the round it answers.
const VOTE_BYTES: usize = 8;

/// Rounds (µs, sorted) of a client's request made durable on a leader and
/// one of two followers, each with a file of its own in `dir`, back to
/// back for `span`.
fn replicated_rounds(dir: &Path, span: Duration) -> Result<Vec<u64>, String> {
    let io = |e: std::io::Error| format!("replicated round: {e}");
    let mut follower_addrs = Vec::new();
    let mut followers = Vec::new();
    for i in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
        follower_addrs.push(listener.local_addr().map_err(io)?);
        let file = zeroed(&dir.join(format!("follower{i}")))?;
        followers.push(std::thread::spawn(move || follow(&listener, &file)));
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let leader_addr = listener.local_addr().map_err(io)?;
    let file = zeroed(&dir.join("leader"))?;
    let leader = std::thread::spawn(move || -> std::io::Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?
            .block_on(lead(listener, file, follower_addrs))
    });
    let rounds =
        time_round_trips(leader_addr, &[0x5a; MESSAGE_BYTES], VOTE_BYTES, span).map_err(io)?;
    let joined = |t: std::thread::JoinHandle<std::io::Result<()>>| {
        t.join()
            .map_err(|_| "a replicated-round thread panicked".to_string())?
            .map_err(io)
    };
    joined(leader)?;
    for follower in followers {
        joined(follower)?;
    }
    Ok(rounds)
}

/// A follower: appends and flushes each request, then votes with the
/// request's first bytes (the leader's round number), until the leader
/// leaves (which the slower follower may see only when its vote bounces).
fn follow(listener: &TcpListener, file: &File) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut request = [0; MESSAGE_BYTES];
    let mut offset = 0;
    while stream.read_exact(&mut request).is_ok() {
        write_record(file, &mut offset, &request)?;
        if stream.write_all(&request[..VOTE_BYTES]).is_err() {
            break;
        }
    }
    Ok(())
}

/// The leader: forwards each request to both followers before its own
/// flush, so the three flushes overlap, and answers after its flush and
/// the first vote for that round.
async fn lead(
    listener: TcpListener,
    file: File,
    followers: Vec<std::net::SocketAddr>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (votes_in, mut votes) = tokio::sync::mpsc::unbounded_channel();
    let mut links = Vec::new();
    for addr in followers {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut from, to) = stream.into_split();
        let votes_in = votes_in.clone();
        tokio::spawn(async move {
            let mut vote = [0; VOTE_BYTES];
            while from.read_exact(&mut vote).await.is_ok() {
                if votes_in.send(u64::from_le_bytes(vote)).is_err() {
                    return;
                }
            }
        });
        links.push(to);
    }
    listener.set_nonblocking(true)?;
    let (mut client, _) = tokio::net::TcpListener::from_std(listener)?
        .accept()
        .await?;
    client.set_nodelay(true)?;
    let mut request = [0; MESSAGE_BYTES];
    let mut offset = 0;
    let mut round = 0u64;
    while client.read_exact(&mut request).await.is_ok() {
        round += 1;
        request[..VOTE_BYTES].copy_from_slice(&round.to_le_bytes());
        for link in &mut links {
            link.write_all(&request).await?;
        }
        write_record(&file, &mut offset, &request)?;
        // Votes of earlier rounds from the slower follower are stale.
        while votes.recv().await.ok_or(std::io::ErrorKind::BrokenPipe)? < round {}
        client.write_all(&request[..VOTE_BYTES]).await?;
    }
    Ok(())
}

/// The size of a message in the loopback round trips.
const MESSAGE_BYTES: usize = 200;

/// Round trips (µs, sorted) of a message to a thread that echoes it over
/// loopback TCP (Nagle off, as the transport sets it), back to back for
/// `span`.
fn round_trips(span: Duration) -> Result<Vec<u64>, String> {
    let io = |e: std::io::Error| format!("loopback: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut message = [0; MESSAGE_BYTES];
        while stream.read_exact(&mut message).is_ok() {
            stream.write_all(&message)?;
        }
        Ok(())
    });
    let trips = time_round_trips(addr, &[0x5a; MESSAGE_BYTES], MESSAGE_BYTES, span).map_err(io)?;
    echo.join()
        .map_err(|_| "the echo thread panicked".to_string())?
        .map_err(io)?;
    Ok(trips)
}

/// Round trips (µs, sorted) over one connection to `addr` (Nagle off),
/// back to back for `span`: `request` out, `answer_bytes` back. The
/// connection is closed on return, which ends the peer's loop.
fn time_round_trips(
    addr: std::net::SocketAddr,
    request: &[u8],
    answer_bytes: usize,
    span: Duration,
) -> std::io::Result<Vec<u64>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut answer = vec![0; answer_bytes];
    let mut trips = Vec::new();
    let end = Instant::now() + span;
    while Instant::now() < end {
        let started = Instant::now();
        stream.write_all(request)?;
        stream.read_exact(&mut answer)?;
        trips.push(micros(started.elapsed()));
    }
    trips.sort_unstable();
    Ok(trips)
}

/// The sleep between quorum rounds: about what a single client's round
/// leaves between two syncs.
const QUORUM_GAP_US: u64 = 200;
const NODES: usize = 3;

/// Rounds of three simultaneous write-and-flushes, one file each, `gap_us`
/// apart, for `span`: each round's time (µs, sorted) until the second
/// flush finished.
fn quorum_rounds(dir: &Path, gap_us: u64, span: Duration) -> Result<Vec<u64>, String> {
    let files = (0..NODES)
        .map(|i| zeroed(&dir.join(format!("node{i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // Each round: the main thread opens it, every node flushes, and all
    // meet again; `finished` holds the nodes' end times of the round.
    let start = Arc::new(Barrier::new(NODES + 1));
    let end = Arc::new(Barrier::new(NODES + 1));
    let finished = Arc::new(Mutex::new(Vec::with_capacity(NODES)));
    let stop = Arc::new(AtomicBool::new(false));
    let nodes: Vec<_> = files
        .into_iter()
        .map(|file| {
            let (start, end) = (Arc::clone(&start), Arc::clone(&end));
            let (finished, stop) = (Arc::clone(&finished), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut offset = 0;
                loop {
                    start.wait();
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let done = append(&file, &mut offset).map(|()| Instant::now());
                    if let Ok(mut f) = finished.lock() {
                        f.push(done);
                    }
                    end.wait();
                }
            })
        })
        .collect();
    let mut rounds = Vec::new();
    let mut failure = None;
    let deadline = Instant::now() + span;
    while failure.is_none() && Instant::now() < deadline {
        let began = Instant::now();
        start.wait();
        end.wait();
        let ends = finished
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        match ends.into_iter().collect::<std::io::Result<Vec<_>>>() {
            Ok(mut ends) if ends.len() == NODES => {
                ends.sort_unstable();
                rounds.push(micros(ends[1].duration_since(began)));
            }
            Ok(_) => failure = Some("quorum flush: a node thread failed".to_string()),
            Err(e) => failure = Some(format!("quorum flush: {e}")),
        }
        std::thread::sleep(Duration::from_micros(gap_us));
    }
    stop.store(true, Ordering::Relaxed);
    start.wait();
    for node in nodes {
        node.join().map_err(|_| "a quorum node thread panicked")?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    rounds.sort_unstable();
    Ok(rounds)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn zeroed(path: &Path) -> Result<File, String> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let zeros = vec![0; FILE_BYTES as usize];
    file.write_all_at(&zeros, 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file)
}

/// Writes a batch's record at `offset` (wrapping within the file) and
/// flushes it.
fn append(file: &File, offset: &mut u64) -> std::io::Result<()> {
    const RECORD: [u8; RECORD_BYTES] = [0x5a; RECORD_BYTES];
    write_record(file, offset, &RECORD)
}

/// Writes `record` at `offset` (wrapping within the file) and flushes it.
fn write_record(file: &File, offset: &mut u64, record: &[u8]) -> std::io::Result<()> {
    if *offset + record.len() as u64 > FILE_BYTES {
        *offset = 0;
    }
    file.write_all_at(record, *offset)?;
    *offset += record.len() as u64;
    file.sync_data()
}

/// Latencies (µs, sorted) of write-and-flush, `gap_us` apart, for `span`.
fn flushes(file: &File, gap_us: u64, span: Duration) -> Result<Vec<u64>, String> {
    let mut latencies = Vec::new();
    let mut offset = 0;
    let end = Instant::now() + span;
    while Instant::now() < end {
        let started = Instant::now();
        append(file, &mut offset).map_err(|e| format!("flush: {e}"))?;
        latencies.push(micros(started.elapsed()));
        if gap_us > 0 {
            std::thread::sleep(Duration::from_micros(gap_us));
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

fn report(gap_us: u64, neighbour: &str, sorted: &[u64]) {
    println!(
        "FLUSH gap_us={gap_us} neighbour={neighbour} syncs={} {}",
        sorted.len(),
        percentiles(sorted)
    );
}

/// `p50_us=A p90_us=B p99_us=C` of sorted latencies.
fn percentiles(sorted: &[u64]) -> String {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(i).copied().unwrap_or(0)
    };
    format!("p50_us={} p90_us={} p99_us={}", at(0.5), at(0.9), at(0.99))
}
