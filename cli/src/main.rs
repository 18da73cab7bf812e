//! `trexlock`: run a lease node, or act as a remote lease client.
//!
//! ```text
//! trexlock node --config node1.toml
//! trexlock acquire job-42 --owner me --cluster orders --servers node1.example:7001,node2.example:7001 --ttl 30s
//! trexlock acquire gpus --permits 4 --owner me --cluster orders --servers 127.0.0.1:7001
//! trexlock acquire report --read --owner me --cluster orders --servers 127.0.0.1:7001
//! trexlock acquire nightly --ttl 10s --cluster orders --servers 127.0.0.1:7001 -- ./backup.sh
//! trexlock renew job-42 --owner me --stamp 17 --token 9f86d081884c7d659a2feaa0c55ad015 --ttl 30s --cluster orders --servers 127.0.0.1:7001
//! trexlock release job-42 --owner me --stamp 17 --token 9f86d081884c7d659a2feaa0c55ad015 --cluster orders --servers 127.0.0.1:7001
//! trexlock session open --ttl 10s --owner me --cluster orders --servers 127.0.0.1:7001
//! trexlock acquire job-42 --owner me --session 3 --token 9f86d081884c7d659a2feaa0c55ad015 --cluster orders --servers 127.0.0.1:7001
//! trexlock session keep 3 --owner me --token 9f86d081884c7d659a2feaa0c55ad015 --cluster orders --servers 127.0.0.1:7001
//! trexlock holder job-42 --cluster orders --servers 127.0.0.1:7001
//! trexlock list jobs/ --cluster orders --servers 127.0.0.1:7001
//! trexlock watch jobs/ [--from 1042.3] [--json] --cluster orders --servers 127.0.0.1:7001
//! trexlock status --cluster orders --servers 127.0.0.1:7001 [--json]
//! trexlock force-release job-42 --cluster orders --servers 127.0.0.1:7001 --tls-ca ca.pem --tls-cert admin-ops.pem --tls-key admin-ops.key
//! trexlock member list --cluster orders --servers 127.0.0.1:7001 [--json]
//! trexlock member add 4 10.0.0.4:7001 --cluster orders --servers 127.0.0.1:7001
//! trexlock member promote 4 --cluster orders --servers 127.0.0.1:7001
//! trexlock member remove 2 --cluster orders --servers 127.0.0.1:7001
//! trexlock certs --cluster orders --nodes 1,2,3 --clients billing --admins ops --out ./certs
//! ```

mod acquire;
mod bootstrap;
mod config;
mod force_release;
mod guard;
mod http;
mod list;
mod member;
mod session;
mod shares;
mod status;
mod watch;

/// A node allocates and frees a few small buffers per message: under load
/// glibc's malloc and free took about a fifth of a node's CPU (perf, 64
/// clients), and with mimalloc the nodes' CPU per operation fell by about
/// a sixth (`benches/cluster.rs`, uncontended 64).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: in mimalloc.h (v3, which
/// libmimalloc-sys builds unless asked for v2, and v2 alike) the option
/// after the one libmimalloc-sys names `mi_option_eager_commit_delay` (14)
/// and before `mi_option_use_numa_nodes` (16); it names this one not at
/// all.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Hands memory the node frees back to the OS at once instead of a second
/// later (mimalloc v3's default delay). Taking a snapshot of a million
/// leases frees tens of megabytes in a few large blocks (the encoded
/// table, the journal's buffers); with the delay every node stayed at
/// 559-620 MB for one to three seconds after each snapshot, against
/// 380-400 MB at rest (sampled every 0.1 s beside `benches/million.sh`),
/// and purged at once the memory was gone by the next sample.
fn purge_freed_memory_at_once() {
    // SAFETY: sets a plain integer option; mimalloc reads options
    // atomically and allows changing them at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trexlock_lease::remote::{self, RemoteConfig, TcpNode};
use trexlock_lease::{LeaseClient, LeaseError, LeaseToken, Stamp};
use trexlock_paxos::NodeId;
use trexlock_transport::{TlsConfig, certs};

#[derive(Parser)]
#[command(
    name = "trexlock",
    version,
    about = "Embedded multi-Paxos leases: run a node, or use one as a client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster until interrupted (SIGINT/SIGTERM stop it cleanly).
    Node {
        /// The node's TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Take a lease; prints its stamp. With --hold, keeps it (renewing) until
    /// interrupted; with `-- COMMAND`, runs the command only while it holds.
    Acquire(acquire::AcquireArgs),
    /// Open, keep or close a lease session: one TTL and one keep-alive for
    /// every lease bound to it (`acquire --session`).
    Session {
        #[command(subcommand)]
        command: session::SessionCommand,
    },
    /// Extend a held lease to --ttl from now, with the owner, stamp and
    /// token that `acquire` printed.
    Renew {
        /// Lease name.
        name: String,
        /// The holder's owner name (under the certificate's name, as for
        /// acquire).
        #[arg(long, default_value_t = default_owner())]
        owner: String,
        /// The holder's stamp.
        #[arg(long)]
        stamp: u64,
        /// The holder's secret token, as `acquire` printed it (hex).
        #[arg(long, value_parser = parse_token)]
        token: LeaseToken,
        /// New lease duration from now (never shortens the lease).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Give a lease up, as its owner with its stamp.
    Release {
        /// Lease name.
        name: String,
        /// The holder's owner name (under the certificate's name, as for
        /// acquire).
        #[arg(long, default_value_t = default_owner())]
        owner: String,
        /// The holder's stamp.
        #[arg(long)]
        stamp: u64,
        /// The holder's secret token, as `acquire` printed it (hex).
        #[arg(long, value_parser = parse_token)]
        token: LeaseToken,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print who holds a lease.
    Holder {
        /// Lease name.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the held leases, semaphores and read-write leases (all, or
    /// those whose names start with PREFIX), one line per holder.
    List {
        /// Only names that start with this.
        prefix: Option<String>,
        /// Leases read per request (1 to 1000; each page is a read of its own).
        #[arg(long, default_value_t = 100)]
        page: u32,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print every event (granted, renewed, released, expired, written) on
    /// the leases whose names start with PREFIX, one line each, with the log
    /// position it happened at; `--from` resumes after a position.
    Watch {
        /// Names that start with this (empty: all).
        #[arg(default_value = "")]
        prefix: String,
        /// Print the events after this position (`SLOT` or `SLOT.INDEX`,
        /// as printed) instead of from now.
        #[arg(long, value_parser = parse_position)]
        from: Option<trexlock_lease::WatchPosition>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Take a lease away from whoever holds it (for a stuck lease; the next
    /// waiter gets it). Needs an admin certificate (`certs --admins`).
    ForceRelease {
        /// Lease name.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print every member's role, leader, ballot, applied slot, lag,
    /// leases, waiters and sessions as a table.
    Status {
        /// JSON instead of a table, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// See and change the membership: list, add a learner, promote it,
    /// remove a member (changes need an admin certificate over TLS).
    Member {
        #[command(subcommand)]
        command: member::MemberCommand,
    },
    /// Write a cluster CA and certificates naming each node, client and
    /// administrator (URI SANs trexlock://<cluster>/node/<id>,
    /// trexlock://<cluster>/client/<name> and
    /// trexlock://<cluster>/admin/<name>) into a folder. An existing
    /// ca.pem and ca.key there are reused; no file is ever overwritten.
    Certs {
        /// The cluster id the certificates are for.
        #[arg(long)]
        cluster: String,
        /// Comma-separated node ids to issue node certificates for.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<u16>,
        /// Comma-separated client names to issue client certificates for.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Comma-separated administrator names to issue admin certificates
        /// for (they alone may force-release a lease).
        #[arg(long, value_delimiter = ',')]
        admins: Vec<String>,
        /// The folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// The cluster id.
    #[arg(long)]
    cluster: String,
    /// Comma-separated node addresses, host:port (host names are resolved).
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// Cluster CA certificate (PEM), for mutual TLS.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), naming a client of the cluster.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Allow plain TCP to servers that are not on loopback: anyone on the
    /// path can read and forge the traffic.
    #[arg(long, conflicts_with = "tls_ca")]
    insecure: bool,
}

impl ClusterArgs {
    async fn remote(&self) -> Result<RemoteConfig, String> {
        let mut servers: Vec<SocketAddr> = Vec::new();
        for server in &self.servers {
            let found = tokio::net::lookup_host(server.as_str())
                .await
                .map_err(|e| format!("cannot resolve server {server:?} (host:port): {e}"))?;
            servers.extend(found);
        }
        servers.dedup();
        let mut config = RemoteConfig::new(self.cluster.clone(), servers);
        config.insecure = self.insecure;
        config.tls = self.tls()?;
        Ok(config)
    }

    /// The client's TLS settings, if its certificate files are given.
    fn tls(&self) -> Result<Option<TlsConfig>, String> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => TlsConfig::from_pem_files(ca, cert, key)
                .map(Some)
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        }
    }

    /// The owner a command acts as: `owner` as given, else
    /// [`default_owner`], put under the certificate's principal when one
    /// is given and the owner is not under it yet (the only owners the
    /// node lets that certificate use).
    fn owner(&self, owner: Option<String>) -> Result<String, String> {
        let owner = owner.unwrap_or_else(default_owner);
        Ok(match self.tls()? {
            Some(tls) => {
                let principal = remote::principal(tls.identity());
                let under = owner
                    .strip_prefix(principal.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
                if under {
                    owner
                } else {
                    format!("{principal}/{owner}")
                }
            }
            None => owner,
        })
    }

    /// The owner of a command that names none (reads, force-release).
    fn default_owner(&self) -> Result<String, String> {
        self.owner(None)
    }

    async fn client(&self, owner: String) -> Result<LeaseClient, String> {
        let handle = remote::connect(self.remote().await?)
            .await
            .map_err(|e| e.to_string())?;
        Ok(handle.client(owner))
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. }) {
        // A client command piped into `head` must end quietly when the
        // reader leaves, as Unix tools do, instead of panicking in println.
        // The node keeps Rust's default (SIGPIPE ignored): a peer closing a
        // socket must never kill it.
        // SAFETY: no other thread exists yet, and SIG_DFL is a valid
        // disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // One thread for all async work: a node's task, peer links and client
    // connections hand each message to one another, and on one thread each
    // hand-off is a queue push instead of a cross-thread wake-up (futex,
    // then the other thread's scheduling delay) on the request's path.
    // For the same reason a node syncs its journal on this thread (the
    // runtime serves the node alone; see `JournalSync::InPlace` in the
    // node's config), a leader only once its Accepts have left, so that
    // its disk and its followers' work at the same time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trexlock: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("trexlock: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Node { config } => run_node(config).await,
        Command::Acquire(args) => acquire::run(args).await,
        Command::Renew {
            name,
            owner,
            stamp,
            token,
            ttl,
            cluster,
        } => {
            let client = cluster.client(cluster.owner(Some(owner))?).await?;
            match client.renew_stamp(&name, Stamp(stamp), token, ttl).await {
                Ok(()) => {
                    println!(
                        "renewed {name} stamp={stamp} ttl={}",
                        humantime::format_duration(ttl)
                    );
                    Ok(())
                }
                Err(LeaseError::LeaseLost { holder, .. }) => Err(not_the_holder(&name, holder)),
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Release {
            name,
            owner,
            stamp,
            token,
            cluster,
        } => {
            let client = cluster.client(cluster.owner(Some(owner))?).await?;
            match client.release_stamp(&name, Stamp(stamp), token).await {
                Ok(()) => {
                    println!("released {name}");
                    Ok(())
                }
                Err(LeaseError::LeaseLost { holder, .. }) => Err(not_the_holder(&name, holder)),
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Holder { name, cluster } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            match client
                .holder(&name)
                .await
                .map_err(|e: LeaseError| e.to_string())?
            {
                Some(h) => println!(
                    "{name} held by {} stamp={} remaining_ms={}",
                    h.owner, h.stamp, h.remaining_ms
                ),
                None => println!("{name} is free"),
            }
            Ok(())
        }
        Command::List {
            prefix,
            page,
            cluster,
        } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            list::print(&client, prefix.as_deref().unwrap_or(""), page).await
        }
        Command::Watch {
            prefix,
            from,
            json,
            count,
            cluster,
        } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            watch::run(&client, &prefix, from, json, count).await
        }
        Command::ForceRelease { name, cluster } => force_release::run(&name, &cluster).await,
        Command::Session { command } => session::run(command).await,
        Command::Status { json, cluster } => status::run(cluster.remote().await?, json).await,
        Command::Member { command } => member::run(command).await,
        Command::Certs {
            cluster,
            nodes,
            clients,
            admins,
            out,
        } => {
            let nodes: Vec<NodeId> = nodes.into_iter().map(NodeId).collect();
            let written = certs::write_cluster_certs(&out, &cluster, &nodes, &clients, &admins)
                .map_err(|e| e.to_string())?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn parse_position(s: &str) -> Result<trexlock_lease::WatchPosition, String> {
    s.parse()
        .map_err(|e: trexlock_lease::watch::BadPosition| e.to_string())
}

fn parse_token(hex: &str) -> Result<LeaseToken, String> {
    u128::from_str_radix(hex, 16)
        .map(LeaseToken)
        .map_err(|e| format!("a token is 32 hex digits: {e}"))
}

fn not_the_holder(name: &str, holder: Option<trexlock_lease::HolderInfo>) -> String {
    format!(
        "not the holder of {name}; holder: {}",
        holder.map_or("nobody".into(), |h| format!(
            "{} (stamp {})",
            h.owner, h.stamp
        ))
    )
}

/// `user@host`: the same in every command a person runs, so `renew` and
/// `release` find what `acquire` took without repeating --owner.
fn default_owner() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let mut host = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let named = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|b| *b == 0).unwrap_or(0);
    match std::str::from_utf8(&host[..end]) {
        Ok(host) if named && !host.is_empty() => format!("{user}@{host}"),
        _ => user,
    }
}

async fn run_node(path: PathBuf) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let file = config::FileConfig::read(&path).map_err(|e| e.to_string())?;
    let metrics_listen = file.metrics_listen();
    let mut config = file.into_node_config().map_err(|e| e.to_string())?;
    bootstrap::settle(&mut config)
        .await
        .map_err(|e| e.to_string())?;
    // Bound before the node starts, so a taken port is a start-up error.
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?,
        ),
        None => None,
    };
    let node = TcpNode::start(config).await.map_err(|e| e.to_string())?;
    tracing::info!(node = %node.node().id(), addr = %node.local_addr(), "node running");
    let _endpoints = match metrics_listener {
        Some(listener) => {
            let endpoints = http::Endpoints::new(node.node().handle())?;
            tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics, /health and /ready");
            Some(AbortOnDrop(tokio::spawn(http::serve(listener, endpoints))))
        }
        None => None,
    };
    // A node that stops on its own ends the process, with the reason and a
    // failure status, so that a supervisor restarts it and `status` never
    // answers for a dead node.
    let stopped = tokio::select! {
        reason = node.stopped() => Some(reason),
        _ = shutdown_signal() => None,
    };
    let result = node.shutdown().await.map_err(|e| e.to_string());
    match stopped {
        Some(reason) => Err(format!("the node stopped: {reason}")),
        None => {
            tracing::info!("stopped");
            result
        }
    }
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn the_option_set_at_start_is_mimallocs_purge_delay_and_becomes_zero() {
        // SAFETY: reads a plain integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc v3 sets purge_delay to 1000 ms by default; no option
        // next to it in the enum has that default.
        assert_eq!(get(), 1000);
        purge_freed_memory_at_once();
        assert_eq!(get(), 0);
    }
}
