//! AES-256-GCM as kmsfs seals and opens tape blocks
//! (`kmsfs::crypto::BlockCipher`, AWS-LC) against the pure-Rust `aes-gcm`
//! crate kmsfs used before, on 256 KiB blocks: five rounds, the order
//! flipping every round. Part of `scripts/bench.sh`; prints MB/s per
//! round and the median ratio of each operation.

use std::time::Instant;

use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit, Nonce, Tag};
use kmsfs::crypto::{BlockCipher, SecretKey};

const BLOCK: usize = 256 * 1024;
const BLOCKS: u64 = 2000;

fn nonce(i: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&i.to_le_bytes());
    n
}

/// MB/s of `f` over BLOCKS blocks.
fn timed(mut f: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    (0..BLOCKS).for_each(&mut f);
    (BLOCK as u64 * BLOCKS) as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let key = [7u8; 32];
    let ours = BlockCipher::new(&SecretKey::from_slice(&key).expect("32 bytes"));
    let theirs = Aes256Gcm::new(&key.into());
    let plain = vec![0x5au8; BLOCK];
    // One sealed block per nonce would be too much memory: open block 0
    // under its nonce again and again (the work is the same).
    let mut sealed = plain.clone();
    let tag = ours.seal_block(0, b"aad", &mut sealed);
    let mut buf = plain.clone();
    let (mut seal_ratios, mut open_ratios) = (Vec::new(), Vec::new());
    for round in 1..=5 {
        // 0, 1: seal by the crate, by kmsfs; 2, 3: open (each with a copy
        // of the sealed block into the buffer). Every other round, kmsfs first.
        let order = if round % 2 == 1 {
            [0, 1, 2, 3]
        } else {
            [1, 0, 3, 2]
        };
        let mut r = [0f64; 4];
        for k in order {
            r[k] = match k {
                0 => timed(|i| {
                    theirs
                        .encrypt_inout_detached(
                            &Nonce::from(nonce(i)),
                            b"aad",
                            (&mut buf[..]).into(),
                        )
                        .expect("seal");
                }),
                1 => timed(|i| {
                    let _ = ours.seal_block(i, b"aad", &mut buf);
                }),
                2 => timed(|_| {
                    buf.copy_from_slice(&sealed);
                    let t = Tag::from(tag);
                    theirs
                        .decrypt_inout_detached(
                            &Nonce::from(nonce(0)),
                            b"aad",
                            (&mut buf[..]).into(),
                            &t,
                        )
                        .expect("open");
                }),
                _ => timed(|_| {
                    buf.copy_from_slice(&sealed);
                    ours.open_block(0, b"aad", &mut buf, &tag).expect("open");
                }),
            };
        }
        seal_ratios.push(r[1] / r[0]);
        open_ratios.push(r[3] / r[2]);
        println!(
            "round {round}: seal: aes-gcm crate {:.0} MB/s, kmsfs (AWS-LC) {:.0} MB/s; open: {:.0} MB/s, {:.0} MB/s",
            r[0], r[1], r[2], r[3]
        );
    }
    println!(
        "AES-256-GCM on 256 KiB blocks, kmsfs against the aes-gcm crate (median of 5): seal {:.1}x, open {:.1}x",
        median(seal_ratios),
        median(open_ratios)
    );
}
