//! The built-in allocator (`ipam.type: "builtin"`): host-local's semantics and on-disk
//! format, with the leases of each network under `<dataDir>/<network>/`.

mod allocator;
pub mod config;
mod disk;
mod lock;
pub mod range;
mod scan;
mod store;

use std::path::PathBuf;

use nix::unistd::{access, AccessFlags};
use rscni_plugin::types::{CNIResult, GcAttachment};

pub use config::BuiltinConfig;

use disk::DiskStore;
use store::{LeaseStore, Owner};

use super::{IpamContext, IpamError, Syncing};

impl BuiltinConfig {
    /// The network's lease directory. The name is validated by the caller; refusing
    /// path separators again here keeps a bug elsewhere from escaping `dataDir`.
    fn network_dir(&self, network: &str) -> Result<PathBuf, IpamError> {
        if network.is_empty() || network == "." || network == ".." || network.contains('/') {
            return Err(IpamError::config(format!(
                "network name {network:?} cannot name a lease directory"
            )));
        }
        Ok(self.data_dir.join(network))
    }

    /// Leases the addresses; they are durable once the [`Syncing`] returned is waited
    /// for.
    pub fn add(&self, ctx: &IpamContext) -> Result<(CNIResult, Syncing), IpamError> {
        let mut store = DiskStore::open(&self.network_dir(ctx.network)?, self.lock_timeout)?;
        let ips = allocator::allocate(&self.range_sets, &mut store, owner(ctx))?;
        let leased = CNIResult {
            ips,
            routes: self.routes.clone(),
            ..CNIResult::default()
        };
        match store.sync_in_background() {
            Ok(syncing) => Ok((leased, syncing)),
            Err(err) => {
                // Not durable, and maybe no thread to make it so: give the leases back.
                if let Err(undo) = self.del(ctx) {
                    tracing::warn!(%undo, "rollback of leases failed");
                }
                Err(err)
            }
        }
    }

    pub fn del(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        let dir = self.network_dir(ctx.network)?;
        let Some(mut store) = DiskStore::open_existing(&dir, self.lock_timeout)? else {
            return Ok(());
        };
        allocator::release(&mut store, owner(ctx)).map(drop)
    }

    pub fn check(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        let dir = self.network_dir(ctx.network)?;
        // No directory means no leases, which check reports like any missing lease.
        let leases = match DiskStore::open_existing(&dir, self.lock_timeout)? {
            Some(store) => store.leases()?,
            None => Vec::new(),
        };
        allocator::check(&self.range_sets, &leases, owner(ctx))
    }

    pub fn gc(&self, ctx: &IpamContext, valid: &[GcAttachment]) -> Result<(), IpamError> {
        let dir = self.network_dir(ctx.network)?;
        let Some(mut store) = DiskStore::open_existing(&dir, self.lock_timeout)? else {
            return Ok(());
        };
        let released = allocator::gc(&mut store, valid)?;
        if !released.is_empty() {
            tracing::info!(network = ctx.network, ?released, "GC released stale leases");
        }
        Ok(())
    }

    /// Usable means the lease directory exists (or can be made) and we may write in it.
    /// The lock is not taken: a busy network is still a working one.
    pub fn status(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        let dir = self.network_dir(ctx.network)?;
        let unusable = |source: std::io::Error| IpamError::DataDirUnusable {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(unusable)?;
        access(&dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| unusable(e.into()))
    }
}

fn owner<'a>(ctx: &IpamContext<'a>) -> Owner<'a> {
    Owner {
        container_id: ctx.container_id,
        ifname: ctx.ifname,
    }
}

#[cfg(test)]
mod allocator_tests;
#[cfg(test)]
mod concurrency_tests;
#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod disk_tests;
#[cfg(test)]
mod hostile_dir_tests;
