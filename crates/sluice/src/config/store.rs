//! `[store]` and `[cluster]`: their config types and their building are the
//! cache's (`sluice_cache::RawStore`, one tagged enum of store kinds, and
//! `sluice_cache::RawCluster`); here their problems are located in the file.

use sluice_cache::{BuiltStore, RawCluster, RawStore};

use super::{ConfigError, Env, Source};

/// Builds the store and the cluster-wide parts, each problem located.
pub(super) fn build(
    store: &RawStore,
    cluster: &RawCluster,
    src: &Source,
    env: &Env<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<BuiltStore> {
    store
        .build(cluster, env)
        .map_err(|found| {
            errs.extend(found.into_iter().map(|e| src.err(e.span, e.key, e.message)));
        })
        .ok()
}
