//! `trexlock force-release NAME`: an operator takes a stuck lease away from
//! whoever holds it. Only a connection with an administrator's certificate
//! (`trexlock certs --admins NAME`) may; the node refuses everyone else.

use crate::ClusterArgs;
use trexlock_lease::{LeaseError, Refusal};

/// Force-releases `name`; prints what happened, or says why it was refused.
pub(crate) async fn run(name: &str, cluster: &ClusterArgs) -> Result<(), String> {
    let client = cluster.client(cluster.default_owner()?).await?;
    match client.force_release(name).await {
        Ok(true) => {
            println!("force-released {name}");
            Ok(())
        }
        Ok(false) => {
            println!("{name} was not held");
            Ok(())
        }
        Err(LeaseError::Refused(Refusal::NotPermitted)) => Err(format!(
            "force-release of {name} refused: {} (connect with --tls-cert/--tls-key of an admin certificate)",
            Refusal::NotPermitted
        )),
        Err(e) => Err(format!("force-release of {name} failed: {e}")),
    }
}
