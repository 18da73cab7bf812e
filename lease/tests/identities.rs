//! Over TLS, what a remote client may ask depends on who its certificate
//! names: owners under its own name only, and forced releases for
//! administrators only.

use std::collections::BTreeMap;
use std::time::Duration;
use trexlock_lease::remote::RemoteHandle;
use trexlock_lease::remote::{self, JournalFile, RemoteConfig, TcpNode, TcpNodeConfig};
use trexlock_lease::{LeaseError, NodeConfig, Refusal, TryAcquire};
use trexlock_paxos::NodeId;
use trexlock_transport::TransportConfig;
use trexlock_transport::certs::ClusterCa;

const CLUSTER: &str = "identities";
const TTL: Duration = Duration::from_secs(30);

/// A one-node cluster on mutual TLS, and a way to connect to it with a
/// certificate of its CA.
struct Secured {
    ca: ClusterCa,
    node: TcpNode,
    _dir: tempfile::TempDir,
}

impl Secured {
    async fn start() -> Secured {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate(CLUSTER).unwrap();
        let addr = trexlock_test_support::local_addr();
        let mut transport = TransportConfig::new(CLUSTER, NodeId(1), addr, BTreeMap::new());
        transport.tls = Some(ca.node(NodeId(1)).unwrap().tls(ca.cert_pem()).unwrap());
        let config = TcpNodeConfig {
            node: NodeConfig::new(NodeId(1), vec![NodeId(1)]),
            transport,
            journal: JournalFile::Redb(dir.path().join("journal.redb")),
        };
        let node = TcpNode::start(config).await.unwrap();
        node.node().wait_for_leader(Duration::from_secs(5)).await;
        Secured {
            ca,
            node,
            _dir: dir,
        }
    }

    async fn connect(&self, cert: trexlock_transport::certs::IssuedCert) -> RemoteHandle {
        let mut config = RemoteConfig::new(CLUSTER, vec![self.node.local_addr()]);
        config.tls = Some(cert.tls(self.ca.cert_pem()).unwrap());
        remote::connect(config).await.unwrap()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_certificate_acts_only_for_owners_under_its_own_name() {
    let cluster = Secured::start().await;
    let billing = cluster.connect(cluster.ca.client("billing").unwrap()).await;

    let own = billing.client("billing/worker-3");
    let lease = match own.try_acquire("invoices", TTL).await.unwrap() {
        TryAcquire::Acquired(lease) => lease,
        TryAcquire::Held(h) => panic!("held by {h:?}"),
    };
    lease.renew().await.unwrap();
    lease.release().await.unwrap();

    for owner in ["alice", "billing-2", "billingx"] {
        let posing = billing.client(owner);
        assert_eq!(
            posing.try_acquire("invoices", TTL).await.unwrap_err(),
            LeaseError::Refused(Refusal::OwnerNotCertified),
            "{owner}"
        );
    }
    // Refused before it was proposed: nobody holds the lease.
    assert_eq!(own.holder("invoices").await.unwrap(), None);
    cluster.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn only_an_administrators_certificate_may_force_a_release_over_tls() {
    let cluster = Secured::start().await;
    let billing = cluster.connect(cluster.ca.client("billing").unwrap()).await;
    let ops = cluster.connect(cluster.ca.admin("ops").unwrap()).await;
    let node_cert = cluster.connect(cluster.ca.node(NodeId(2)).unwrap()).await;

    let holder = billing.client("billing");
    let TryAcquire::Acquired(_lease) = holder.try_acquire("invoices", TTL).await.unwrap() else {
        panic!("the lease is free");
    };
    for (who, handle) in [("client", &billing), ("node", &node_cert)] {
        assert_eq!(
            handle
                .client("billing")
                .force_release("invoices")
                .await
                .unwrap_err(),
            LeaseError::Refused(Refusal::NotPermitted),
            "{who}"
        );
    }
    assert!(holder.holder("invoices").await.unwrap().is_some());

    let operator = ops.client("ops");
    assert!(operator.force_release("invoices").await.unwrap());
    assert_eq!(holder.holder("invoices").await.unwrap(), None);
    assert!(!operator.force_release("invoices").await.unwrap());
    cluster.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn only_an_administrators_certificate_may_change_members_over_tls() {
    use trexlock_lease::client::{MemberError, MemberRefusal};
    let cluster = Secured::start().await;
    let billing = cluster.connect(cluster.ca.client("billing").unwrap()).await;
    let client = billing.client("billing");
    assert_eq!(
        client.add_learner(NodeId(2), "127.0.0.1:7002").await,
        Err(MemberError::Refused(MemberRefusal::NotPermitted))
    );
    assert_eq!(
        client.remove(NodeId(1)).await,
        Err(MemberError::Refused(MemberRefusal::NotPermitted))
    );
    // Anyone of the cluster may list the members.
    let list = client.members().await.unwrap();
    assert_eq!(list.members.len(), 1);
    let own = cluster.node.local_addr().to_string();
    assert_eq!(list.members[0].address.as_deref(), Some(own.as_str()));

    let ops = cluster.connect(cluster.ca.admin("ops").unwrap()).await;
    // Permitted: the leader itself judges the change.
    assert_eq!(
        ops.client("ops").remove(NodeId(9)).await,
        Err(MemberError::Refused(MemberRefusal::UnknownNode(NodeId(9))))
    );
    cluster.node.shutdown().await.unwrap();
}
