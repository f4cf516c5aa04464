//! Converting a legacy-mode LSU to KMS (KEK) mode, one container per step.
//!
//! The first step switches the LSU to KMS mode with `converting` set, so
//! new segments are already sealed under DEKs and KEKs. Each step then
//! takes one container holding legacy segments, opens each legacy segment
//! with its KMS key, seals it again under a fresh DEK wrapped by the
//! active KEK into a new container (other records are copied verbatim),
//! fsyncs, points the index at the new places in one transaction and only
//! then deletes the old container. A kill at any point leaves every
//! segment readable at its old or new place; running `convert` again
//! continues where it stopped. Readers that held the old place look the
//! segment up again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::container::{ContainerWriter, read_record};
use super::segment::{OpenError, Sealer, open_record, seal_into};
use super::state::LsuState;
use super::{Msdp, MsdpError};
use crate::catalog::{Fp, LsuMode, LsuRec, Move, SegKind, SegRec};

/// Per container: legacy plaintext bytes, and all its index entries.
type ByContainer = BTreeMap<u64, (u64, Vec<(Fp, SegRec)>)>;

/// Where a conversion stands after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvertProgress {
    pub lsu: String,
    /// Plaintext bytes of legacy segments converted by this step.
    pub done_bytes: u64,
    /// Plaintext bytes of legacy segments still to convert.
    pub remaining_bytes: u64,
    pub remaining_containers: usize,
    pub finished: bool,
}

impl Msdp {
    /// Converts one container of legacy segments; call until `finished`.
    pub fn convert_step(&self, name: &str) -> Result<ConvertProgress, MsdpError> {
        let state = self.state(name)?;
        let _admin = state.admin.lock();
        let mut rec = self
            .catalog
            .lsu(name)?
            .ok_or_else(|| MsdpError::NoLsu(name.into()))?;
        match rec.mode {
            LsuMode::None => {
                return Err(MsdpError::Refused(format!(
                    "LSU {name} is not encrypted: there is no legacy KMS encryption to convert"
                )));
            }
            LsuMode::Legacy => {
                rec = self.catalog.update_lsu(name, |r| {
                    r.mode = LsuMode::Kms;
                    r.converting = true;
                })?;
                rec.active_kek = Some(self.new_kek(name)?.id);
                tracing::info!(
                    lsu = name,
                    "LSU switched to KMS mode; converting legacy segments"
                );
            }
            LsuMode::Kms => {}
        }
        let mut todo = legacy_containers(self, name)?;
        let remaining = |t: &ByContainer| t.values().map(|v| v.0).sum();
        let Some((&id, _)) = todo.iter().find(|(_, v)| v.0 > 0) else {
            if rec.converting {
                // A legacy writer still in flight records its tag again
                // at its commit (and conversion resumes): see LsuCommit.
                self.catalog.update_lsu(name, |r| {
                    r.converting = false;
                    r.legacy_tags.clear();
                })?;
                self.save_keydict(name, None)?;
                tracing::info!(lsu = name, "conversion to KMS mode finished");
            }
            return Ok(ConvertProgress {
                lsu: name.into(),
                done_bytes: 0,
                remaining_bytes: 0,
                remaining_containers: 0,
                finished: true,
            });
        };
        let (done, segs) = todo.remove(&id).expect("found");
        convert_container(self, &state, &rec, id, &segs)?;
        Ok(ConvertProgress {
            lsu: name.into(),
            done_bytes: done,
            remaining_bytes: remaining(&todo),
            remaining_containers: todo.values().filter(|v| v.0 > 0).count(),
            finished: false,
        })
    }
}

/// Every container's (legacy plaintext bytes, all its index entries).
fn legacy_containers(msdp: &Msdp, name: &str) -> Result<ByContainer, MsdpError> {
    let mut all: ByContainer = BTreeMap::new();
    msdp.catalog.for_each_segment(name, |fp, s| {
        let e = all.entry(s.container).or_default();
        if s.kind == SegKind::Legacy {
            e.0 += u64::from(s.plain);
        }
        e.1.push((*fp, s.clone()));
    })?;
    Ok(all)
}

fn convert_container(
    msdp: &Msdp,
    state: &Arc<LsuState>,
    rec: &LsuRec,
    id: u64,
    segs: &[(Fp, SegRec)],
) -> Result<(), MsdpError> {
    crate::util::failpoint::hit(crate::util::failpoint::CONVERT).map_err(|e| {
        MsdpError::io(
            format!("LSU {} conversion of container {id:016x}", rec.name),
            e,
        )
    })?;
    let (kek, key) = msdp.active_kek(&rec.name)?;
    let sealer = Sealer::Kek { id: kek.id, key };
    let keks = msdp.catalog.keks(&rec.name)?;
    // A container a writer still appends to stays: only its legacy
    // segments move (reclaim gives back the old copies once it is done).
    let busy = state.inflight.lock().containers.contains(&id);
    let segs: Vec<&(Fp, SegRec)> = segs
        .iter()
        .filter(|(_, s)| !busy || s.kind == SegKind::Legacy)
        .collect();
    let mut out = ContainerWriter::create(state)?;
    let mut moves = Vec::with_capacity(segs.len());
    for (fp, s) in segs.iter().map(|x| (&x.0, &x.1)) {
        let (h, buf) = read_record(state, id, s.offset, s.len).map_err(|e| {
            e.report(
                &state.name,
                id,
                s.offset,
                "conversion cannot read this segment: ",
            )
        })?;
        let before = out.size();
        let offset = if s.kind == SegKind::Legacy {
            let plain = open_record(msdp, rec, &keks, fp, s, &h, buf).map_err(|e| match e {
                OpenError::Key(e) => e,
                OpenError::Damaged(why) => damaged(state, id, s, why),
            })?;
            out.append(|b| seal_into(b, &rec.id, *fp, &plain, &sealer))?
        } else {
            out.append(|b| {
                b.extend_from_slice(&buf);
                Ok(())
            })?
        };
        let len = (out.size() - before) as u32;
        let (kind, kek_id) = if s.kind == SegKind::Legacy {
            (SegKind::Kek, kek.id)
        } else {
            (s.kind, s.kek)
        };
        moves.push(Move {
            fp: *fp,
            to: SegRec {
                container: out.id,
                offset,
                len,
                kind,
                kek: kek_id,
                ..s.clone()
            },
        });
    }
    let c = out.sync()?;
    // A cloud LSU's container is in the bucket before the index names it.
    state
        .backend
        .publish_container(out.id, &state.path(out.id))?;
    let retired: &[u64] = if busy { &[] } else { &[id] };
    msdp.catalog
        .relocate(&rec.name, &moves, &[(out.id, c)], retired)?;
    if !busy {
        super::gc::remove(state, id)?;
    }
    tracing::info!(lsu = %rec.name, from = id, to = out.id, segments = segs.len(), "container converted to KMS mode");
    Ok(())
}

fn damaged(state: &LsuState, id: u64, s: &SegRec, why: String) -> MsdpError {
    MsdpError::Integrity {
        lsu: state.name.clone(),
        container: id,
        offset: s.offset,
        why: format!("conversion cannot read this segment: {why}"),
    }
}
