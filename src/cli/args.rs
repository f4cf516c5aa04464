//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// kmsfs: encrypted virtual tape pools and deduplicating LSUs, mounted with FUSE.
#[derive(Debug, Parser)]
#[command(name = "kmsfs", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Options every store command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The store directory.
    #[arg(long, global = true, env = "KMSFS_STORE")]
    pub store: Option<PathBuf>,
    /// Pass phrase file of a pass-phrase keystore.
    #[arg(
        long = "keystore-pass-phrase-file",
        alias = "passphrase-file",
        global = true,
        env = "KMSFS_PASSPHRASE_FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Host master key file kept outside the store.
    #[arg(long, global = true, env = "KMSFS_HMK_FILE")]
    pub hmk_file: Option<PathBuf>,
    /// Sizes in tables as exact byte counts instead of `8.0 GiB`
    /// (`--json` always has bytes).
    #[arg(long, global = true)]
    pub bytes: bool,
    /// No progress bars (there are none either when stderr is not a terminal).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Cmd {
    /// Create a store: config, embedded keystore, places for volumes, catalog and LSUs.
    Init(InitArgs),
    /// Mount a store (options: see `kmsfs mount --help`).
    Mount(MountArgs),
    /// Key management: key groups and keys (modelled on nbkmsutil).
    #[command(subcommand)]
    Kms(KmsCmd),
    /// Virtual tape volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Backup images in the catalog.
    #[command(subcommand)]
    Image(ImageCmd),
    /// What the store holds and who serves it.
    Status(JsonArg),
    /// Read and authenticate every image and volume; exit 1 on damage.
    Fsck(JsonArg),
    /// Import volumes written by another store: phase 1 reads headers (no key), phase 2 the data.
    Import(ImportArgs),
    /// Deduplicating pools (MSDP LSUs) and their keys.
    #[command(subcommand)]
    Lsu(LsuCmd),
    /// Immutable backups: retention locks on pools and LSUs, legal holds,
    /// the compliance clock.
    #[command(subcommand)]
    Worm(WormCmd),
    /// The tamper-evident audit log of key, retention and lock operations.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Print a shell completion script (scripts/install.sh installs them).
    #[serde(skip)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff: `kmsfs man | man -l -`), or write a page
    /// per command into a directory.
    Man {
        /// Write kmsfs.1 and kmsfs-COMMAND.1 into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum LsuCmd {
    /// Create an LSU: --kms (envelope encryption: DEK per segment, KEKs
    /// wrapped by the key group's root key), --legacy-kms (segments sealed
    /// directly under the group's KMS key), or neither (unencrypted).
    Create {
        name: String,
        #[arg(long, conflicts_with = "legacy_kms", requires = "key_group")]
        kms: bool,
        #[arg(long, requires = "key_group")]
        legacy_kms: bool,
        #[arg(long)]
        key_group: Option<String>,
        /// Make a new KEK after it wrapped this many DEKs (0: no limit).
        #[arg(long)]
        kek_max_segments: Option<u64>,
        /// … or sealed this much data, e.g. 1T (0: no limit).
        #[arg(long, value_parser = parse_size)]
        kek_max_bytes: Option<u64>,
        /// … or is this many seconds old (0: no limit).
        #[arg(long)]
        kek_max_age: Option<u64>,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// List the LSUs.
    List(JsonArg),
    /// Whether an LSU is in KMS, legacy KMS or no encryption mode (crcontrol --getmode).
    Getmode {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The LSU's key dictionary: its KEKs (keydictutil --list).
    Keydict {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a new active KEK now; the old ones stay to unwrap old DEKs.
    RotateKek { name: String },
    /// Rewrap every KEK under the key group's active root key (data untouched).
    Rewrap { name: String },
    /// Convert a legacy-KMS LSU to KMS mode (resumable; reads keep working).
    Convert {
        name: String,
        /// Convert one container and print the progress as JSON.
        #[arg(long, hide = true)]
        step: bool,
    },
    /// Change the encryption mode (none, legacy-kms, kms) within the rules.
    Setmode { name: String, mode: String },
    /// Reclaim the space of segments no image uses.
    Gc {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a lost LSU from its directory (a copy of STORE/lsu/NAME:
    /// containers, recipes, key dictionary) or from its bucket, and the KMS
    /// holding its root keys.
    Recover {
        name: String,
        /// The LSU's directory, e.g. a replica of /old-store/lsu/NAME; or a
        /// cloud LSU's s3://BUCKET/PREFIX (with --endpoint and
        /// --credentials-file): the LSU stays in the bucket.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        bucket: BucketArgs,
        #[arg(long)]
        json: bool,
    },
}

/// How to reach a cloud LSU's bucket (made, or recovered from).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketArgs {
    /// The object store's URL, e.g. https://s3.example.com:9000.
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// AWS shared credentials file (aws_access_key_id, aws_secret_access_key);
    /// read by the daemon, never copied into the store.
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
    /// Most bytes of containers kept on local disk for reads, e.g. 4G.
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Seconds a request to the object store may stall (no answer) before
    /// it is retried; an operation gives up after about three times this.
    /// Default 30.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: Option<u64>,
}

/// Where a cloud LSU keeps its containers.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudArgs {
    /// Keep the containers in an S3-compatible bucket: s3://BUCKET/PREFIX.
    #[arg(long, requires_all = ["endpoint", "credentials_file"])]
    pub cloud: Option<String>,
    #[command(flatten)]
    pub bucket: BucketArgs,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportArgs {
    /// 1: read headers only, list images and the key tags they need (no key
    /// needed); 2: read, authenticate and catalog the images. Default: both.
    #[arg(long)]
    pub phase: Option<u8>,
    #[arg(long)]
    pub json: bool,
    /// Volume files (`*.kvol`); never written to.
    #[arg(required = true)]
    pub volumes: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitArgs {
    /// Directory of the new store (created; must be new or empty).
    pub dir: PathBuf,
    /// Number of virtual tape drives.
    #[arg(long)]
    pub drives: Option<u32>,
    /// Capacity of one volume, e.g. 8G, 512M.
    #[arg(long, value_parser = parse_size)]
    pub volume_capacity: Option<u64>,
    /// Seconds a job waits for a free drive before EBUSY.
    #[arg(long)]
    pub drive_wait: Option<u64>,
    /// Most volumes in the library.
    #[arg(long)]
    pub max_volumes: Option<u32>,
    /// Only if the store does not exist yet (no error if it does).
    #[arg(long)]
    pub if_absent: bool,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountArgs {
    /// The store (`/path/to/store`).
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    /// Comma-separated options: ro, rw, allow_other, default_permissions,
    /// nodefault_permissions, pass_phrase_file=F, hmk=F, drives=N, kms_timeout=SECS,
    /// log=LEVEL, log_file=F, fg, nonempty, threads=N, kmip_server=HOST:PORT
    /// (repeatable, first tried first), kmip_ca=F, kmip_cert=F, kmip_key=F,
    /// key_cache=SECS; and, accepted and ignored, the
    /// generic ones mount(8) and systemd pass: defaults, auto, noauto, nofail,
    /// _netdev, user, users, nouser, dev, nodev, suid, nosuid, exec, noexec,
    /// atime, noatime, relatime, x-systemd.*, comment=*.
    #[arg(short = 'o', action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Stay in the foreground, log to stderr.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// mount(8) helper flags, accepted: -n (no mtab), -s (sloppy), -v.
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
    #[arg(short = 'v', hide = true)]
    pub verbose: bool,
    /// The type mount(8) passes to helpers (`kmsfs`, `fuse.kmsfs`); checked.
    #[arg(short = 't', hide = true)]
    pub fstype: Option<String>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonArg {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum KmsCmd {
    /// Create a key group.
    Createkg {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List key groups.
    Listkgs(JsonArg),
    /// Delete an empty key group.
    Deletekg { name: String },
    /// Create a key (random, or from a pass phrase).
    Createkey {
        #[arg(long = "key-group", alias = "kg")]
        kg: String,
        #[arg(long)]
        name: String,
        /// Derive the key from the pass phrase in this file (Argon2id + HKDF with the tag).
        #[arg(long)]
        pass_phrase_file: Option<PathBuf>,
        /// Make it the active key of the group.
        #[arg(long)]
        activate: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List keys: group, name, tag, state, times, description; never key bytes.
    Listkeys {
        #[arg(long = "key-group", alias = "kg")]
        kg: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change a key's state, name or description.
    Modifykey {
        #[arg(long = "key-group", alias = "kg")]
        kg: String,
        #[arg(long)]
        name: String,
        /// prelive, active, inactive, deprecated or terminated.
        #[arg(long)]
        state: Option<String>,
        /// Change the state even though an LSU uses the key (a compromised
        /// root key): the LSU's data is unreadable until it is usable again.
        #[arg(long, requires = "state")]
        force: bool,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a prelive or terminated key that nothing uses.
    Deletekey {
        #[arg(long = "key-group", alias = "kg")]
        kg: String,
        #[arg(long)]
        name: String,
    },
    /// Recreate a pass-phrase key from its pass phrase and tag.
    Recoverkey {
        #[arg(long = "key-group", alias = "kg")]
        kg: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        pass_phrase_file: PathBuf,
    },
    /// Export key groups to a pass-phrase protected container.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        pass_phrase_file: PathBuf,
        #[arg(long = "key-group", alias = "kg")]
        groups: Vec<String>,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Import key groups from a container (atomic; keys whose tag exists are skipped).
    Import {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        pass_phrase_file: PathBuf,
        #[arg(long)]
        preview: bool,
        #[arg(long)]
        preserve_kgname: bool,
        #[arg(long)]
        json: bool,
    },
    /// Which KMS backend serves this store; for KMIP, asks every server.
    Status(JsonArg),
    /// Choose the KMS: `embedded`, or `kmip` with --server (repeat it: the
    /// first is tried first), --ca, --cert, --key. Used from the next mount.
    Setbackend {
        /// embedded or kmip.
        backend: String,
        /// host:port of a KMIP server.
        #[arg(long = "server")]
        servers: Vec<String>,
        /// CA certificate (PEM) that signed the servers' certificates.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Client certificate (PEM, extendedKeyUsage clientAuth).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Client private key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Seconds a key fetched for a tape drive stays cached.
        #[arg(long)]
        key_cache_secs: Option<u64>,
    },
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum VolumeCmd {
    /// Every volume: barcode, pool, state, bytes used, capacity, file.
    List(JsonArg),
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum WormCmd {
    /// Set the retention of `pools/POOL` or `msdp/LSU`: every image
    /// committed there is locked for the default retention. Only ever
    /// stricter: governance may become compliance, never back; in
    /// compliance the minimum and maximum only grow.
    Set {
        /// `pools/POOL` or `msdp/LSU`.
        target: String,
        /// governance (a lock may be released with the bypass credential)
        /// or compliance (no one may shorten a lock).
        #[arg(long)]
        mode: String,
        /// Shortest retention, e.g. 7d (s, m, h, d, y).
        #[arg(long, value_parser = parse_duration)]
        min: u64,
        /// Longest retention.
        #[arg(long, value_parser = parse_duration)]
        max: u64,
        /// Retention of each new image.
        #[arg(long, value_parser = parse_duration)]
        default: u64,
        /// Governance mode: the file whose content releases a lock (keep
        /// it away from the store and its keystore).
        #[arg(long)]
        bypass_key_file: Option<PathBuf>,
        /// The current bypass credential: needed to loosen a governance
        /// policy or to change its credential.
        #[arg(long)]
        governance_bypass: Option<PathBuf>,
    },
    /// The policies, and every locked or held image with its unlock time.
    Show(JsonArg),
    /// Put an image on legal hold: it cannot be deleted whatever its retention.
    Hold {
        /// `pools/POOL/PATH`, `msdp/LSU/PATH` or the image id.
        image: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a legal hold.
    Unhold { image: String },
    /// Lengthen an image's retention by a duration from now (never shortens).
    Extend {
        image: String,
        #[arg(long, value_parser = parse_duration)]
        by: u64,
    },
    /// Release a governance lock with the bypass credential.
    Release {
        image: String,
        /// The bypass key file given to `worm set`.
        #[arg(long)]
        governance_bypass: PathBuf,
    },
    /// The compliance clock; --confirm believes a system clock that jumped
    /// ahead by more than the skew; --skew sets how far ahead of the
    /// store's last time the clock is believed after a reboot (at most and
    /// by default a day).
    Clock {
        #[arg(long)]
        confirm: bool,
        #[arg(long, value_parser = parse_duration)]
        skew: Option<u64>,
    },
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum AuditCmd {
    /// The entries, oldest first.
    Show {
        #[arg(long)]
        json: bool,
        /// Only entries at or after this time (`2026-12-01` or `2026-12-01T10:00:00Z`).
        #[arg(long)]
        since: Option<String>,
    },
    /// Check the hash chain and every entry's MAC; exit 1 naming the first
    /// entry that breaks.
    Verify,
}

/// Seconds from `30s`, `15m`, `12h`, `7d`, `1y` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "y" => 365 * 86400,
        _ => return Err(format!("'{s}': units are s, m, h, d, y")),
    };
    n.checked_mul(mul)
        .filter(|&secs| secs <= 1000 * 365 * 86400)
        .ok_or_else(|| format!("'{s}' is longer than a thousand years"))
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ImageCmd {
    /// Every image: path, size, key tag, volumes.
    List(JsonArg),
    /// Whether a restored file is byte for byte the image that was backed
    /// up: compares a digest keyed by this store (exit 1 if it differs).
    Verify {
        /// `pools/POOL/PATH`, `msdp/LSU/PATH` or the image id.
        image: String,
        /// The restored file.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Restore members of a tar image into a directory, reading only their
    /// blocks (by the file list made when the image was written).
    Restore {
        /// `pools/POOL/PATH`, `msdp/LSU/PATH` or the image id.
        image: String,
        /// Member paths as `image files` lists them; a directory brings
        /// everything under it.
        #[arg(required = true)]
        members: Vec<String>,
        /// Existing directory to restore into (files there are never overwritten).
        #[arg(long)]
        to: PathBuf,
    },
    /// An image's file list: the members of a tar archive, with offsets.
    Files {
        /// `pools/POOL/PATH`, `POOL/PATH` or the image id.
        image: String,
        #[arg(long)]
        json: bool,
    },
}

/// The file arguments of a store command.
fn file_args(cmd: &mut Cmd) -> Vec<&mut PathBuf> {
    match cmd {
        Cmd::Kms(k) => match k {
            KmsCmd::Createkey {
                pass_phrase_file: Some(p),
                ..
            } => vec![p],
            KmsCmd::Recoverkey {
                pass_phrase_file, ..
            } => vec![pass_phrase_file],
            KmsCmd::Export {
                out,
                pass_phrase_file,
                ..
            } => vec![out, pass_phrase_file],
            KmsCmd::Import {
                input,
                pass_phrase_file,
                ..
            } => vec![input, pass_phrase_file],
            KmsCmd::Setbackend { ca, cert, key, .. } => ca
                .iter_mut()
                .chain(cert.iter_mut())
                .chain(key.iter_mut())
                .collect(),
            _ => vec![],
        },
        Cmd::Worm(WormCmd::Set {
            bypass_key_file,
            governance_bypass,
            ..
        }) => bypass_key_file
            .iter_mut()
            .chain(governance_bypass.iter_mut())
            .collect(),
        Cmd::Worm(WormCmd::Release {
            governance_bypass, ..
        }) => vec![governance_bypass],
        Cmd::Image(ImageCmd::Verify { file, .. }) => vec![file],
        Cmd::Image(ImageCmd::Restore { to, .. }) => vec![to],
        Cmd::Import(a) => a.volumes.iter_mut().collect(),
        Cmd::Lsu(LsuCmd::Recover { from, bucket, .. }) => {
            let mut v: Vec<&mut PathBuf> = bucket.credentials_file.iter_mut().collect();
            if !is_bucket_url(from) {
                v.push(from);
            }
            v
        }
        Cmd::Lsu(LsuCmd::Create {
            cloud:
                CloudArgs {
                    bucket:
                        BucketArgs {
                            credentials_file: Some(f),
                            ..
                        },
                    ..
                },
            ..
        }) => vec![f],
        _ => vec![],
    }
}

/// Whether `--from` names a bucket (`s3://…`), not a directory.
pub fn is_bucket_url(p: &std::path::Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// Makes every file argument of a store command absolute, relative to
/// `cwd` (the CLI's directory), before it is sent to a daemon.
pub fn absolutize(cmd: &mut Cmd, cwd: &std::path::Path) {
    for p in file_args(cmd) {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    }
}

/// Whether a command has file arguments.
pub fn has_file_args(cmd: &mut Cmd) -> bool {
    !file_args(cmd).is_empty()
}

/// A file argument that is not absolute, if any: a daemon refuses it
/// (it would be resolved against the daemon's directory, not the caller's).
pub fn relative_file_arg(cmd: &mut Cmd) -> Option<PathBuf> {
    file_args(cmd)
        .into_iter()
        .find(|p| p.is_relative())
        .map(|p| p.clone())
}

/// Parses `123`, `4K`, `512M`, `8G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size unit in '{s}'")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size"))
}

impl KmsCmd {
    /// Whether the command only reads (lists and status are not audited).
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            KmsCmd::Listkgs(_) | KmsCmd::Listkeys { .. } | KmsCmd::Status(_)
        )
    }
}

/// `(operation, target)` of a store command for the audit log: its name
/// (`kms createkey`) and its arguments (names and paths; no secret is an
/// argument: pass phrases and keys travel in files).
pub fn describe(cmd: &Cmd) -> (String, String) {
    let v = serde_json::to_value(cmd).unwrap_or_default();
    let (top, inner) = match v.as_object().and_then(|o| o.iter().next()) {
        Some((k, v)) => (k.to_lowercase(), v.clone()),
        None => (
            v.as_str().unwrap_or("?").to_lowercase(),
            serde_json::Value::Null,
        ),
    };
    let (sub, args) = match inner.as_object().and_then(|o| o.iter().next()) {
        Some((k, v)) => (k.to_lowercase(), v.to_string()),
        None => (inner.as_str().unwrap_or("").to_lowercase(), String::new()),
    };
    (format!("{top} {sub}").trim().to_string(), args)
}
