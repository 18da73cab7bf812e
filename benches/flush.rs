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

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    Ok(())
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

/// Writes one record at `offset` (wrapping within the file) and flushes it.
fn append(file: &File, offset: &mut u64) -> std::io::Result<()> {
    const RECORD: [u8; RECORD_BYTES] = [0x5a; RECORD_BYTES];
    if *offset + RECORD_BYTES as u64 > FILE_BYTES {
        *offset = 0;
    }
    file.write_all_at(&RECORD, *offset)?;
    *offset += RECORD_BYTES as u64;
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
        latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        if gap_us > 0 {
            std::thread::sleep(Duration::from_micros(gap_us));
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

fn report(gap_us: u64, neighbour: &str, sorted: &[u64]) {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(i).copied().unwrap_or(0)
    };
    println!(
        "FLUSH gap_us={gap_us} neighbour={neighbour} syncs={} p50_us={} p90_us={} p99_us={}",
        sorted.len(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
}
