//! Reclaiming space: segments no committed image references are dropped
//! from the index, containers with nothing live are deleted, containers
//! mostly dead are compacted (live records copied verbatim to a new
//! container: no key is needed, the records are bound to their segment,
//! not their place), and container files the catalog does not know (a
//! writer or reclaim that died) are removed.
//!
//! Crash safety comes from the order: a file is deleted only after the
//! transaction that stops referring to it is durable, and a new container
//! is referred to only after it is fsynced. A kill at any point leaves
//! every committed image readable and, at worst, a file the next reclaim
//! removes. Segments that writers in flight rely on are left alone.

use crate::util::failpoint;
use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::backend::container_files;
use super::container::{ContainerWriter, RecordError, read_record};
use super::state::LsuState;
use super::{Msdp, MsdpError};
use crate::catalog::{ContainerRec, Fp, Move, SegRec};

/// A container is compacted when less than this share of it is live.
const COMPACT_BELOW: f64 = 0.5;

/// What a reclaim did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub lsu: String,
    pub dead_segments: usize,
    pub containers_removed: usize,
    pub containers_compacted: usize,
    pub orphans_removed: usize,
    /// Recipe files of images gone, removed; of images without one (or
    /// renamed with their folder), written.
    pub recipes_removed: usize,
    pub recipes_written: usize,
    /// A WORM cloud LSU: locked images whose objects were retained, and
    /// containers left alone because the object store retains them.
    pub images_retained: usize,
    pub containers_retained: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Msdp {
    /// Reclaims the space of LSU `name` that no committed image needs;
    /// `progress(done, total)` counts the containers judged.
    pub fn reclaim(
        &self,
        name: &str,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<GcReport, MsdpError> {
        let state = self.state(name)?;
        let _admin = state.admin.lock();
        state.backend.check_owner()?;
        let marker = super::recover::incomplete_marker(&state.lsu_dir);
        if marker.exists() {
            return Err(MsdpError::Refused(format!(
                "LSU {name}: its recovery from {} left images behind (listed in {}): gc would remove what they need; run kmsfs lsu recover again, or remove that file to give them up",
                state.backend.describe(),
                marker.display()
            )));
        }
        let mut r = GcReport {
            lsu: name.into(),
            bytes_before: disk_bytes(&state)?,
            ..Default::default()
        };
        // Before segments are dropped: no recipe file is left naming
        // segments of an image that is gone.
        (r.recipes_removed, r.recipes_written) = self.tidy_recipes(&state)?;
        if let Err(e) = self.save_keydict(name, None) {
            tracing::warn!(lsu = name, "key dictionary file not written: {e}");
        }
        r.dead_segments = {
            let inflight = state.inflight.lock();
            self.catalog
                .drop_dead_segments(name, |fp| inflight.fps.contains_key(fp))?
                .len()
        };
        // A WORM cloud LSU: what an outage left unretained is retained
        // now, and no container the object store retains is touched.
        let worm = state.backend.is_cloud() && self.worm_mode(name)?.is_some();
        if worm {
            r.images_retained = self.retain_locked(name)?;
        }
        let now = self.catalog.clock().now_ns();
        let (live, containers) = live_by_container(self, name)?;
        let busy = state.inflight.lock().containers.clone();
        let total = containers.len() as u64;
        for (n, (id, c)) in containers.into_iter().enumerate() {
            progress(n as u64, total);
            if busy.contains(&id) {
                continue;
            }
            let touched = match live.get(&id) {
                None => true,
                Some((bytes, _)) => (*bytes as f64) < c.size as f64 * COMPACT_BELOW,
            };
            if touched && worm && super::retention::retained(&state, id, now)? {
                r.containers_retained += 1;
                continue;
            }
            match live.get(&id) {
                None => {
                    self.catalog.relocate(name, &[], &[], &[id])?;
                    remove(&state, id)?;
                    r.containers_removed += 1;
                }
                Some((bytes, segs)) if (*bytes as f64) < c.size as f64 * COMPACT_BELOW => {
                    compact(self, &state, id, segs)?;
                    r.containers_compacted += 1;
                }
                Some(_) => {}
            }
        }
        progress(total, total);
        r.orphans_removed = remove_orphans(self, &state)?;
        r.bytes_after = disk_bytes(&state)?;
        tracing::info!(
            lsu = name,
            dead = r.dead_segments,
            removed = r.containers_removed,
            compacted = r.containers_compacted,
            orphans = r.orphans_removed,
            freed = r.bytes_before.saturating_sub(r.bytes_after),
            "reclaim done"
        );
        Ok(r)
    }
}

type Live = HashMap<u64, (u64, Vec<(Fp, SegRec)>)>;

/// Live bytes and index entries of each container, and the containers,
/// from one snapshot (a container committed later is not judged empty).
fn live_by_container(
    msdp: &Msdp,
    name: &str,
) -> Result<(Live, Vec<(u64, ContainerRec)>), MsdpError> {
    let mut live: Live = HashMap::new();
    let containers = msdp.catalog.for_each_segment(name, |fp, s| {
        let e = live.entry(s.container).or_default();
        e.0 += u64::from(s.len);
        e.1.push((*fp, s.clone()));
    })?;
    Ok((live, containers))
}

/// Copies the records of `segs` from container `id` into a new container,
/// points the index at them, then deletes the old file.
fn compact(
    msdp: &Msdp,
    state: &std::sync::Arc<LsuState>,
    id: u64,
    segs: &[(Fp, SegRec)],
) -> Result<(), MsdpError> {
    let mut out = ContainerWriter::create(state)?;
    let mut moves = Vec::with_capacity(segs.len());
    for (fp, s) in segs {
        let (h, buf) =
            read_record(state, id, s.offset, s.len).map_err(|e| damaged(state, id, s, e))?;
        if &h.fp != fp {
            return Err(damaged(
                state,
                id,
                s,
                RecordError::Damaged("record holds another segment".into()),
            ));
        }
        let offset = out.append(|b| {
            b.extend_from_slice(&buf);
            Ok(())
        })?;
        moves.push(Move {
            fp: *fp,
            to: SegRec {
                container: out.id,
                offset,
                ..s.clone()
            },
        });
    }
    let rec: ContainerRec = out.sync()?;
    state
        .backend
        .publish_container(out.id, &state.path(out.id))?;
    failpoint::hit(failpoint::GC_RELOCATE).map_err(|e| {
        MsdpError::io(
            format!("LSU {} reclaim of container {id:016x}", state.name),
            e,
        )
    })?;
    msdp.catalog
        .relocate(&state.name, &moves, &[(out.id, rec)], &[id])?;
    remove(state, id)
}

fn damaged(state: &LsuState, id: u64, s: &SegRec, e: RecordError) -> MsdpError {
    e.report(
        &state.name,
        id,
        s.offset,
        "reclaim cannot move this segment: ",
    )
}

/// Deletes a container file the catalog no longer refers to.
pub(super) fn remove(state: &LsuState, id: u64) -> Result<(), MsdpError> {
    state.forget_file(id);
    failpoint::hit(failpoint::GC_UNLINK)
        .map_err(|e| MsdpError::io(format!("removing {}", state.path(id).display()), e))?;
    // The object first: a local copy is only a cache of it.
    state.backend.remove_container(id)?;
    match std::fs::remove_file(state.path(id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MsdpError::io(
            format!("removing {}", state.path(id).display()),
            e,
        )),
    }
}

/// Removes container files neither the catalog nor a writer knows.
fn remove_orphans(msdp: &Msdp, state: &LsuState) -> Result<usize, MsdpError> {
    // In this order: ids made from here on are a writer's (skipped); a
    // container in flight now is in `busy`; one committed and released
    // since is in `known`, read after. Never an id that is neither.
    let limit = state.next_id();
    let busy = state.inflight.lock().containers.clone();
    let known: HashSet<u64> = msdp
        .catalog
        .containers(&state.name)?
        .into_iter()
        .map(|c| c.0)
        .collect();
    let mut n = 0;
    let mut ids = container_files(&state.dir)?;
    if state.backend.is_cloud() {
        ids.extend(state.backend.container_ids(&state.dir)?);
        ids.sort_unstable();
        ids.dedup();
    }
    for id in ids {
        if id < limit && !known.contains(&id) && !busy.contains(&id) {
            tracing::info!(lsu = %state.name, container = id, "removing a container no commit refers to");
            remove(state, id)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Bytes of container files on disk.
fn disk_bytes(state: &LsuState) -> Result<u64, MsdpError> {
    let mut total = 0;
    for id in container_files(&state.dir)? {
        if let Ok(m) = std::fs::metadata(state.path(id)) {
            total += m.len();
        }
    }
    Ok(total)
}
