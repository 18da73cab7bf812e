//! Starting a cluster of `trexlock node` processes, shared by the cluster
//! bench (`benches/cluster.rs`) and the million-lease bench
//! (`benches/million.rs`).

#![allow(dead_code)] // Each includer uses a different part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use trexlock::lease::remote::{self, RemoteConfig, RemoteHandle};

/// The `trexlock` binary, freshly built beside the running bench (a stale
/// binary would measure old code).
pub fn built_binary() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "-p", "trexlock-cli"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err("building trexlock-cli failed".into());
    }
    // A bench runs as <target>/release/deps/NAME-HASH.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("trexlock"))
        .filter(|p| p.exists())
        .ok_or_else(|| "no trexlock binary beside this bench; pass --bin PATH".into())
}

/// A loopback port a node can still bind when it starts (see
/// [`trexlock_test_support::free_port`]).
pub fn free_port() -> Result<u16, String> {
    trexlock_test_support::free_port().map_err(|e| e.to_string())
}

/// Connects to the cluster, retrying for up to five seconds while its
/// processes start.
pub async fn connect(config: &RemoteConfig) -> Result<RemoteHandle, String> {
    for _ in 0..100 {
        if let Ok(handle) = remote::connect(config.clone()).await {
            return Ok(handle);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("cannot reach {:?}", config.servers))
}
