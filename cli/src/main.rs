//! `trexlock`: run a lease node, or act as a remote lease client.
//!
//! ```text
//! trexlock node --config node1.toml
//! trexlock acquire job-42 --cluster orders --servers 127.0.0.1:7001,127.0.0.1:7002 --ttl 30s
//! trexlock release job-42 --owner me --stamp 17 --token 9f86d081884c7d659a2feaa0c55ad015 --cluster orders --servers 127.0.0.1:7001
//! trexlock holder job-42 --cluster orders --servers 127.0.0.1:7001
//! trexlock status --cluster orders --servers 127.0.0.1:7001
//! trexlock force-release job-42 --cluster orders --servers 127.0.0.1:7001 --tls-ca ca.pem --tls-cert admin-ops.pem --tls-key admin-ops.key
//! trexlock certs --cluster orders --nodes 1,2,3 --clients billing --admins ops --out ./certs
//! ```

mod config;
mod force_release;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trexlock_lease::remote::{self, RemoteConfig, TcpNode};
use trexlock_lease::{LeaseClient, LeaseError, LeaseToken, Stamp, TryAcquire};
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
    /// Take a lease; prints its stamp. With --hold, keeps it (renewing) until interrupted.
    Acquire {
        /// Lease name.
        name: String,
        /// Lease duration (e.g. 10s, 500ms).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Wait in line up to this long if someone else holds it (0s: do not wait).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Who holds the lease.
        #[arg(long)]
        owner: Option<String>,
        /// Keep renewing until interrupted, then release.
        #[arg(long)]
        hold: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Give a lease up, as its owner with its stamp.
    Release {
        /// Lease name.
        name: String,
        /// The holder's owner name.
        #[arg(long)]
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
    /// Take a lease away from whoever holds it (for a stuck lease; the next
    /// waiter gets it). Needs an admin certificate (`certs --admins`).
    ForceRelease {
        /// Lease name.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print a node's status and counters.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
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
struct ClusterArgs {
    /// The cluster id.
    #[arg(long)]
    cluster: String,
    /// Comma-separated node addresses.
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<SocketAddr>,
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
    fn remote(&self) -> Result<RemoteConfig, String> {
        let mut config = RemoteConfig::new(self.cluster.clone(), self.servers.clone());
        config.insecure = self.insecure;
        if let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsConfig::from_pem_files(ca, cert, key).map_err(|e| e.to_string())?);
        }
        Ok(config)
    }

    /// The owner a command acts as when none is given: with a certificate,
    /// a name under the certificate's principal (the only owners the node
    /// lets it use); without, one of this process's own.
    fn default_owner(&self) -> Result<String, String> {
        Ok(match self.remote()?.tls {
            Some(tls) => format!("{}/{}", remote::principal(tls.identity()), process_owner()),
            None => process_owner(),
        })
    }

    async fn client(&self, owner: String) -> Result<LeaseClient, String> {
        let handle = remote::connect(self.remote()?)
            .await
            .map_err(|e| format!("cannot reach the cluster: {e}"))?;
        Ok(handle.client(owner))
    }
}

fn main() -> ExitCode {
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
    // Journal syncs run on their own thread and never block it.
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
        Command::Acquire {
            name,
            ttl,
            wait,
            owner,
            hold,
            cluster,
        } => {
            let owner = match owner {
                Some(owner) => owner,
                None => cluster.default_owner()?,
            };
            let client = cluster.client(owner.clone()).await?;
            let lease = if wait.is_zero() {
                match client
                    .try_acquire(&name, ttl)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    TryAcquire::Acquired(lease) => lease,
                    TryAcquire::Held(h) => {
                        return Err(format!(
                            "{name} is held by {} (stamp {}, {} ms left)",
                            h.owner, h.stamp, h.remaining_ms
                        ));
                    }
                }
            } else {
                client
                    .acquire(&name, ttl, wait)
                    .await
                    .map_err(|e| e.to_string())?
            };
            let token = lease.token().map_err(|e| e.to_string())?;
            println!(
                "acquired {name} owner={owner} stamp={} token={:032x}",
                lease.stamp(),
                token.0
            );
            if hold {
                let lease = std::sync::Arc::new(lease);
                let mut keep_alive = trexlock_lease::KeepAlive::start(lease.clone());
                tokio::select! {
                    lost = keep_alive.lost() => return Err(format!("lease lost: {lost}")),
                    _ = shutdown_signal() => {}
                }
                drop(keep_alive);
                lease.release().await.map_err(|e| e.to_string())?;
                println!("released {name}");
            }
            Ok(())
        }
        Command::Release {
            name,
            owner,
            stamp,
            token,
            cluster,
        } => {
            let client = cluster.client(owner).await?;
            match client.release_stamp(&name, Stamp(stamp), token).await {
                Ok(()) => {
                    println!("released {name}");
                    Ok(())
                }
                Err(LeaseError::LeaseLost { holder, .. }) => Err(format!(
                    "not the holder of {name}; holder: {}",
                    holder.map_or("nobody".into(), |h| format!(
                        "{} (stamp {})",
                        h.owner, h.stamp
                    ))
                )),
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
        Command::ForceRelease { name, cluster } => force_release::run(&name, &cluster).await,
        Command::Status { cluster } => {
            let status = remote::status(&cluster.remote()?)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "node={} leader={} is_leader={} applied={}",
                status.node,
                status.leader.map_or("unknown".into(), |l| l.to_string()),
                status.is_leader,
                status.applied
            );
            println!("{:?}", status.metrics);
            Ok(())
        }
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

fn parse_token(hex: &str) -> Result<LeaseToken, String> {
    u128::from_str_radix(hex, 16)
        .map(LeaseToken)
        .map_err(|e| format!("a token is 32 hex digits: {e}"))
}

fn process_owner() -> String {
    format!("cli-{}", std::process::id())
}

async fn run_node(path: PathBuf) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = config::FileConfig::read(&path)
        .and_then(config::FileConfig::into_node_config)
        .map_err(|e| e.to_string())?;
    let node = TcpNode::start(config).await.map_err(|e| e.to_string())?;
    tracing::info!(node = %node.node().id(), addr = %node.local_addr(), "node running");
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
