//! Where an LSU's containers, recipe files and key dictionary are kept:
//! the LSU's local directory (the store's disk), or an S3-compatible
//! bucket, with the local directory as staging for containers being
//! written and as a bounded cache of containers read.
//!
//! Everything above this goes through [`Backend`]: a container is
//! *published* once sealed (a cloud LSU uploads it, never over an object
//! that exists), before the catalog transaction that refers to it; a
//! container missing locally is *fetched*; removing one removes the object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::MsdpError;
use super::format::{CONTAINER_MAX, MAX_CONTAINER_ID};
use super::health::{Health, unanswered};
use super::net::runtime;
use super::object_lock::ObjectLock;
use crate::catalog::WormMode;

/// How an LSU's files are kept.
pub trait Backend: Send + Sync {
    /// For messages: `local` or `s3://BUCKET/PREFIX at ENDPOINT`.
    fn describe(&self) -> String;
    fn is_cloud(&self) -> bool;
    /// Makes sealed container `id` (the whole file at `local`) durable
    /// where the LSU keeps it. Never replaces an existing object.
    fn publish_container(&self, id: u64, local: &Path) -> Result<(), MsdpError>;
    /// Makes a recipe or key dictionary file (`rel`, e.g.
    /// `recipes/ID.krc`; already written locally) durable where the LSU
    /// keeps it.
    fn publish_file(&self, rel: &str, bytes: &[u8]) -> Result<(), MsdpError>;
    fn remove_file(&self, rel: &str) -> Result<(), MsdpError>;
    /// Brings container `id` into `local`. A container that is not there
    /// (a local LSU's file, a cloud LSU's object) is an `Io` error of kind
    /// NotFound.
    fn fetch_container(&self, id: u64, local: &Path) -> Result<(), MsdpError>;
    /// Removes container `id` where the LSU keeps it (the local file is
    /// the caller's).
    fn remove_container(&self, id: u64) -> Result<(), MsdpError>;
    /// Ids of the containers kept (a cloud LSU: the objects).
    fn container_ids(&self, local_dir: &Path) -> Result<Vec<u64>, MsdpError>;
    /// Downloads `rel` (a cloud LSU), if it exists; refused if it is
    /// longer than `max` bytes (nothing read from the bucket is trusted).
    fn fetch_file(&self, rel: &str, max: usize) -> Result<Option<Vec<u8>>, MsdpError>;
    /// Names of the files under `rel/` (a cloud LSU).
    fn list_files(&self, rel: &str) -> Result<Vec<String>, MsdpError>;
    /// Refused if another store has taken the LSU's place over (a cloud
    /// LSU recovered elsewhere): this one then only reads.
    fn check_owner(&self) -> Result<(), MsdpError>;
    /// Has the object store retain `rel` (S3 Object Lock) in `mode` until
    /// at least `until_ns` (a local LSU: the catalog's lock is all).
    fn retain(&self, rel: &str, mode: WormMode, until_ns: i64) -> Result<(), MsdpError>;
    /// Until when the object store retains `rel`, if it does.
    fn retained_until(&self, rel: &str) -> Result<Option<i64>, MsdpError>;
}

/// The store's own disk: the local directory is everything.
pub struct LocalDir;

impl Backend for LocalDir {
    fn describe(&self) -> String {
        "local".into()
    }
    fn is_cloud(&self) -> bool {
        false
    }
    fn publish_container(&self, _: u64, _: &Path) -> Result<(), MsdpError> {
        Ok(())
    }
    fn publish_file(&self, _: &str, _: &[u8]) -> Result<(), MsdpError> {
        Ok(())
    }
    fn remove_file(&self, _: &str) -> Result<(), MsdpError> {
        Ok(())
    }
    fn fetch_container(&self, _: u64, local: &Path) -> Result<(), MsdpError> {
        Err(MsdpError::io(
            local.display().to_string(),
            std::io::ErrorKind::NotFound.into(),
        ))
    }
    fn remove_container(&self, _: u64) -> Result<(), MsdpError> {
        Ok(())
    }
    fn container_ids(&self, local_dir: &Path) -> Result<Vec<u64>, MsdpError> {
        container_files(local_dir)
    }
    fn fetch_file(&self, _: &str, _: usize) -> Result<Option<Vec<u8>>, MsdpError> {
        Ok(None)
    }
    fn list_files(&self, _: &str) -> Result<Vec<String>, MsdpError> {
        Ok(Vec::new())
    }
    fn check_owner(&self) -> Result<(), MsdpError> {
        Ok(())
    }
    fn retain(&self, _: &str, _: WormMode, _: i64) -> Result<(), MsdpError> {
        Ok(())
    }
    fn retained_until(&self, _: &str) -> Result<Option<i64>, MsdpError> {
        Ok(None)
    }
}

/// A cloud LSU's settings (`STORE/lsu/NAME/cloud.json`). The credentials
/// stay in their own file, named here, read when the LSU is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    pub endpoint: String,
    pub region: String,
    /// An AWS shared credentials file (`aws_access_key_id = …`,
    /// `aws_secret_access_key = …`), absolute.
    pub credentials_file: PathBuf,
    /// Most bytes of containers kept locally for reads.
    pub cache_bytes: u64,
    /// Seconds a request may stall (no byte answered); retries are made
    /// within three times this, so a hung store costs a reader or writer
    /// about that much, never a transfer that is merely slow.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// This store's claim on the prefix (random, hex): the `owner` object
    /// holds the claim of the store that writes there. None: an LSU made
    /// before claims, which writes while no other store claims the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The object naming the store that writes a cloud LSU's prefix.
pub const OWNER_FILE: &str = "owner";

impl CloudConfig {
    /// The same settings with a new claim of this store's.
    pub fn claimed(&self) -> Result<Self, MsdpError> {
        let token: [u8; 16] = crate::crypto::random_array()?;
        Ok(Self {
            owner: Some(hex::encode(token)),
            ..self.clone()
        })
    }
}

/// The default read cache of a cloud LSU.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// The default request timeout of a cloud LSU, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl CloudConfig {
    /// (bucket, prefix) of `s3://BUCKET/PREFIX`, checked.
    pub fn bucket_prefix(&self) -> Result<(String, String), MsdpError> {
        let bad = |why: &str| MsdpError::Refused(format!("cloud location {}: {why}", self.url));
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad("the bucket name must be 3 to 63 of a-z 0-9 . -"));
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix
            .split('/')
            .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
            || prefix.len() > 512
        {
            return Err(bad("the prefix must be a plain path"));
        }
        if self.endpoint.contains('@') {
            return Err(MsdpError::Refused(
                "the endpoint URL may not carry credentials (user@): use --credentials-file".into(),
            ));
        }
        if !self.endpoint.starts_with("http://") && !self.endpoint.starts_with("https://") {
            return Err(MsdpError::Refused(format!(
                "endpoint {}: not an http:// or https:// URL",
                self.endpoint
            )));
        }
        if !self.credentials_file.is_absolute() {
            return Err(MsdpError::Refused(format!(
                "credentials file {}: give an absolute path",
                self.credentials_file.display()
            )));
        }
        Ok((bucket.to_string(), prefix.to_string()))
    }
}

/// The access key and secret of an AWS shared credentials file (its
/// `[default]` section, or the only one).
fn read_credentials(path: &Path) -> Result<(String, Zeroizing<String>), MsdpError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| MsdpError::io(format!("credentials file {}", path.display()), e))?,
    );
    // Each section's pair; `[default]` wins, else the only section.
    let mut sections: Vec<(String, Option<String>, Option<Zeroizing<String>>)> =
        vec![(String::new(), None, None)];
    for line in text.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[') {
            sections.push((s.trim_end_matches(']').trim().to_string(), None, None));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let cur = sections.last_mut().expect("one section at least");
        match k.trim() {
            "aws_access_key_id" => cur.1 = Some(v.trim().to_string()),
            "aws_secret_access_key" => cur.2 = Some(Zeroizing::new(v.trim().to_string())),
            _ => {}
        }
    }
    let whole: Vec<_> = sections
        .into_iter()
        .filter_map(|(name, id, secret)| match (id, secret) {
            (Some(i), Some(s)) if !i.is_empty() && !s.is_empty() => Some((name, i, s)),
            _ => None,
        })
        .collect();
    let pick = match whole.iter().position(|w| w.0 == "default") {
        Some(i) => Some(i),
        None if whole.len() == 1 => Some(0),
        None => None,
    };
    match pick {
        Some(i) => {
            let (_, id, secret) = whole.into_iter().nth(i).expect("picked");
            Ok((id, secret))
        }
        None => Err(MsdpError::Refused(format!(
            "credentials file {}: needs aws_access_key_id and aws_secret_access_key (in [default], or in its only section)",
            path.display()
        ))),
    }
}

/// An S3-compatible bucket.
pub struct S3 {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
    owner: Option<String>,
    lock: ObjectLock,
    health: Health,
}

impl S3 {
    pub fn open(c: &CloudConfig) -> Result<Self, MsdpError> {
        let (bucket, prefix) = c.bucket_prefix()?;
        // The HTTP client's TLS takes the process's provider: AWS-LC, as
        // everywhere else in kmsfs (set once; a second call is a no-op).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (id, secret) = read_credentials(&c.credentials_file)?;
        let lock = ObjectLock::new(
            &c.endpoint,
            &bucket,
            &c.region,
            (id.clone(), secret.clone()),
            Duration::from_secs(c.timeout_secs.clamp(1, 3600)),
            format!("{} at {}", c.url.trim_end_matches('/'), c.endpoint),
        )?;
        let describe = format!("{} at {}", c.url.trim_end_matches('/'), c.endpoint);
        let timeout = Duration::from_secs(c.timeout_secs.clamp(1, 3600));
        let store = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(&c.region)
            .with_endpoint(&c.endpoint)
            .with_access_key_id(id)
            .with_secret_access_key(secret.as_str())
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: timeout * 3,
                ..Default::default()
            })
            // Client options carry allow_http too: set with them. The
            // timeout is a stall (no byte for that long), not a transfer:
            // a 64 MiB container on a slow link still arrives; the whole
            // request is bounded far above it.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(c.endpoint.starts_with("http://"))
                    .with_connect_timeout(timeout.min(Duration::from_secs(5)))
                    .with_read_timeout(timeout)
                    .with_timeout(Duration::from_secs(1800)),
            )
            .build()
            .map_err(|e| MsdpError::Refused(format!("{describe}: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
            describe,
            owner: c.owner.clone(),
            lock,
            health: Health::default(),
        })
    }

    fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Runs one request to the store, unless the store is down and another
    /// caller is trying it (see [`Health`]).
    fn run<T>(
        &self,
        request: impl Future<Output = Result<T, object_store::Error>>,
    ) -> Result<T, object_store::Error> {
        let _probe = self.health.admit()?;
        let r = runtime().block_on(request);
        self.health.record(&r);
        r
    }

    /// Runs an Object Lock call (made by its own client, not object_store)
    /// under the same health gate as every other request.
    fn gated<T>(
        &self,
        what: &str,
        call: impl FnOnce() -> Result<T, MsdpError>,
    ) -> Result<T, MsdpError> {
        let _probe = self.health.admit().map_err(|e| self.err(what, e))?;
        let r = call();
        match &r {
            Err(MsdpError::Unreachable { why, .. }) => self.health.unanswered(why.clone()),
            _ => self.health.answered(),
        }
        r
    }

    /// A failed request: credentials refused, the store not answering
    /// (after the retries), or an answer refusing it; named with the
    /// endpoint and the object.
    fn err(&self, what: &str, e: object_store::Error) -> MsdpError {
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => MsdpError::Refused(format!(
                "{}: {what}: the credentials are refused: {e}",
                self.describe
            )),
            e if unanswered(&e) => MsdpError::Unreachable {
                store: self.describe.clone(),
                what: what.to_string(),
                why: e.to_string(),
            },
            e => MsdpError::io(
                format!("{}: {what}", self.describe),
                std::io::Error::other(e.to_string()),
            ),
        }
    }

    /// The bytes of `key`, streamed into `sink`; stopped once more than
    /// `max` arrived (what the store announces is not trusted) or the sink
    /// refuses a chunk.
    fn download(
        &self,
        key: &ObjectPath,
        max: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Download, object_store::Error> {
        // The store answered once the headers are here: the probe of a
        // store that was down ends with them, not with the last byte.
        let got = self.run(self.store.get(key))?;
        let r = runtime().block_on(async {
            let mut body = got.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = body.try_next().await? {
                n += chunk.len() as u64;
                if n > max {
                    return Ok(Download::TooLong);
                }
                if let Err(e) = sink(&chunk) {
                    return Ok(Download::Sink(e));
                }
            }
            Ok(Download::Done)
        });
        self.health.record(&r);
        r
    }

    /// Makes this store the one that writes the prefix.
    pub fn claim(&self) -> Result<(), MsdpError> {
        let Some(o) = &self.owner else {
            return Ok(());
        };
        let key = self.key(OWNER_FILE);
        self.run(
            self.store
                .put(&key, PutPayload::from(o.clone().into_bytes())),
        )
        .map(|_| ())
        .map_err(|e| self.err(&format!("uploading object {key}"), e))
    }

    /// Whether the prefix holds an LSU already (its key dictionary).
    pub fn holds_lsu(&self) -> Result<bool, MsdpError> {
        Ok(self
            .fetch_file(super::manifest::KEYDICT_FILE, super::manifest::MAX_KEYDICT)?
            .is_some())
    }
}

/// A container's name under the prefix.
pub fn container_rel(id: u64) -> String {
    format!("containers/{id:016x}.kct")
}

impl Backend for S3 {
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn is_cloud(&self) -> bool {
        true
    }

    fn publish_container(&self, id: u64, local: &Path) -> Result<(), MsdpError> {
        self.check_owner()?;
        let bytes = std::fs::read(local)
            .map_err(|e| MsdpError::io(format!("container {}", local.display()), e))?;
        let key = self.key(&container_rel(id));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.run(self.store.put_opts(&key, PutPayload::from(bytes), opts)) {
            Ok(_) => Ok(()),
            // Uploaded before a failure that came after (a retry): ours if
            // it holds these very bytes; never replaced.
            Err(object_store::Error::AlreadyExists { .. }) => {
                let bytes = std::fs::read(local)
                    .map_err(|e| MsdpError::io(format!("container {}", local.display()), e))?;
                self.same_object(&key, &bytes)
            }
            Err(e) => Err(self.err(&format!("uploading object {key}"), e)),
        }
    }

    fn publish_file(&self, rel: &str, bytes: &[u8]) -> Result<(), MsdpError> {
        self.check_owner()?;
        let key = self.key(rel);
        self.run(self.store.put(&key, PutPayload::from(bytes.to_vec())))
            .map(|_| ())
            .map_err(|e| self.err(&format!("uploading object {key}"), e))
    }

    fn remove_file(&self, rel: &str) -> Result<(), MsdpError> {
        self.check_owner()?;
        let key = self.key(rel);
        match self.run(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(&format!("deleting object {key}"), e)),
        }
    }

    fn fetch_container(&self, id: u64, local: &Path) -> Result<(), MsdpError> {
        let key = self.key(&container_rel(id));
        // Durable under its name only once whole: a torn cache file would
        // read as damage, not as missing.
        // A name of its own: a recovery fetching the same container at the
        // same time writes another file.
        let (tmp, mut f) = crate::util::atomic::create_temp(local, 0o600)
            .map_err(|e| MsdpError::io(format!("cache file beside {}", local.display()), e))?;
        let cache_err = |e| MsdpError::io(format!("cache file {}", tmp.display()), e);
        let got = self.download(&key, CONTAINER_MAX, &mut |chunk| {
            std::io::Write::write_all(&mut f, chunk)
        });
        let done = match got {
            Ok(Download::Done) => f.sync_all().map_err(cache_err),
            Ok(Download::TooLong) => Err(MsdpError::io(
                format!(
                    "{}: object {key} is longer than any container ({CONTAINER_MAX} bytes)",
                    self.describe
                ),
                std::io::ErrorKind::InvalidData.into(),
            )),
            Ok(Download::Sink(e)) => Err(cache_err(e)),
            Err(object_store::Error::NotFound { .. }) => Err(MsdpError::io(
                format!("{}: object {key}", self.describe),
                std::io::ErrorKind::NotFound.into(),
            )),
            Err(e) => Err(self.err(&format!("fetching object {key}"), e)),
        };
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, local).map_err(cache_err)?;
        crate::util::atomic::sync_dir(local.parent().unwrap_or(Path::new(".")))
            .map_err(|e| MsdpError::io(format!("cache folder of {}", local.display()), e))
    }

    fn remove_container(&self, id: u64) -> Result<(), MsdpError> {
        self.remove_file(&container_rel(id))
    }

    fn container_ids(&self, _: &Path) -> Result<Vec<u64>, MsdpError> {
        Ok(self
            .list_files("containers")?
            .iter()
            .filter_map(|n| container_id(n))
            .collect())
    }

    fn fetch_file(&self, rel: &str, max: usize) -> Result<Option<Vec<u8>>, MsdpError> {
        let key = self.key(rel);
        let mut out = Vec::new();
        let got = self.download(&key, max as u64, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        });
        match got {
            Ok(Download::Done) => Ok(Some(out)),
            Ok(Download::TooLong) => Err(MsdpError::Refused(format!(
                "{}: object {key} is longer than the {max} bytes it may be",
                self.describe
            ))),
            Ok(Download::Sink(_)) => unreachable!("a Vec takes every byte"),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(&format!("fetching object {key}"), e)),
        }
    }

    fn check_owner(&self) -> Result<(), MsdpError> {
        let held = self.fetch_file(OWNER_FILE, 64)?;
        match (held, &self.owner) {
            (Some(h), Some(o)) if h == o.as_bytes() => Ok(()),
            // Settings written before claims existed, on a prefix no
            // store has claimed since.
            (None, None) => Ok(()),
            (None, Some(_)) => Err(MsdpError::Refused(format!(
                "{}: the object {} that names the store writing this prefix is gone (deleted by hand or by a lifecycle rule): this store reads its images but writes nothing there until it is back (kmsfs lsu recover NAME --from the same URL claims the prefix again)",
                self.describe,
                self.key(OWNER_FILE)
            ))),
            (Some(_), _) => Err(MsdpError::Refused(format!(
                "{}: another store took this prefix over (kmsfs lsu recover there): this store reads its images but no longer writes or deletes there",
                self.describe
            ))),
        }
    }

    fn retain(&self, rel: &str, mode: WormMode, until_ns: i64) -> Result<(), MsdpError> {
        let key = self.key(rel);
        self.gated(&format!("retention of object {key}"), || {
            self.lock.retain(key.as_ref(), mode, until_ns)
        })
    }

    fn retained_until(&self, rel: &str) -> Result<Option<i64>, MsdpError> {
        let key = self.key(rel);
        self.gated(&format!("retention of object {key}"), || {
            Ok(self.lock.retention(key.as_ref())?.map(|r| r.until_ns))
        })
    }

    /// The objects right under `rel/` (not in folders below it).
    fn list_files(&self, rel: &str) -> Result<Vec<String>, MsdpError> {
        let dir = self.key(rel);
        let listed = self
            .run(self.store.list_with_delimiter(Some(&dir)))
            .map_err(|e| self.err(&format!("listing {dir}"), e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }
}

/// How a download ended (a failed request aside).
enum Download {
    Done,
    /// More bytes than allowed arrived.
    TooLong,
    /// The sink refused a chunk (a cache file that could not be written).
    Sink(std::io::Error),
}

impl S3 {
    /// Whether the object at `key` holds exactly `bytes` (refused if not:
    /// another writer put something else under the name).
    fn same_object(&self, key: &ObjectPath, bytes: &[u8]) -> Result<(), MsdpError> {
        let mut at = 0usize;
        let got = self.download(key, bytes.len() as u64, &mut |chunk| {
            let same = bytes.get(at..at + chunk.len()) == Some(chunk);
            at += chunk.len();
            if same {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        });
        match got {
            Ok(Download::Done) if at == bytes.len() => Ok(()),
            Ok(_) => Err(MsdpError::Refused(format!(
                "{}: object {key} exists and holds other bytes than this container: another writer uses this bucket prefix",
                self.describe
            ))),
            Err(e) => Err(self.err(&format!("object {key}"), e)),
        }
    }
}

/// The id of a container named `NAME` (exactly 16 lowercase hex digits and
/// `.kct`, at most [`MAX_CONTAINER_ID`]); any other name is not one.
pub fn container_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".kct")?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|id| (1..=MAX_CONTAINER_ID).contains(id))
}

/// `DIR/0000000000000007.kct`.
pub fn container_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.kct"))
}

/// Ids of the container files in `dir`.
pub fn container_files(dir: &Path) -> Result<Vec<u64>, MsdpError> {
    let rd = std::fs::read_dir(dir).map_err(|e| MsdpError::io(dir.display().to_string(), e))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = container_id(&name) {
            out.push(id);
        }
    }
    Ok(out)
}

/// `STORE/lsu/NAME/cloud.json`.
pub fn cloud_config_path(lsu_dir: &Path) -> PathBuf {
    lsu_dir.join("cloud.json")
}

/// `STORE/lsu/NAME/container-ids`: the container ids a cloud LSU has
/// handed out are all below the number in it (decimal). Written by the
/// LSU's state; removed with the settings it belongs to.
pub const RESERVED_FILE: &str = "container-ids";

/// Writes `LSU_DIR/cloud.json` (made durable); its path. Ids reserved
/// under other settings (another prefix or claim) do not carry over: the
/// bucket is listed again.
pub fn write_config(lsu_dir: &Path, c: &CloudConfig) -> Result<PathBuf, MsdpError> {
    let io = |e| MsdpError::io(lsu_dir.display().to_string(), e);
    std::fs::create_dir_all(lsu_dir).map_err(io)?;
    let p = cloud_config_path(lsu_dir);
    let same = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<CloudConfig>(&b).ok())
        .is_some_and(|old| old.url == c.url && old.endpoint == c.endpoint && old.owner == c.owner);
    if !same {
        remove_reserved(lsu_dir)?;
    }
    let json = serde_json::to_vec_pretty(c).expect("config serializes");
    crate::util::atomic::write_atomic(&p, &json, 0o600)
        .map_err(|e| MsdpError::io(p.display().to_string(), e))?;
    Ok(p)
}

/// Removes `LSU_DIR/container-ids` (durably), if it is there.
pub fn remove_reserved(lsu_dir: &Path) -> Result<(), MsdpError> {
    let p = lsu_dir.join(RESERVED_FILE);
    match std::fs::remove_file(&p) {
        Ok(()) => crate::util::atomic::sync_dir(lsu_dir)
            .map_err(|e| MsdpError::io(lsu_dir.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MsdpError::io(p.display().to_string(), e)),
    }
}

/// The bucket URL and endpoint of the LSU whose directory is `lsu_dir`
/// (none: a local LSU).
pub fn location(lsu_dir: &Path) -> Option<(String, String)> {
    let b = std::fs::read(cloud_config_path(lsu_dir)).ok()?;
    let c: CloudConfig = serde_json::from_slice(&b).ok()?;
    Some((c.url.trim_end_matches('/').to_string(), c.endpoint))
}

/// The read cache size of the LSU whose directory is `lsu_dir`.
pub fn cache_bytes(lsu_dir: &Path) -> u64 {
    std::fs::read(cloud_config_path(lsu_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<CloudConfig>(&b).ok())
        .map_or(DEFAULT_CACHE_BYTES, |c| c.cache_bytes)
}

/// The backend of the LSU whose directory is `lsu_dir`.
pub fn open(lsu_dir: &Path) -> Result<Arc<dyn Backend>, MsdpError> {
    let p = cloud_config_path(lsu_dir);
    match std::fs::read(&p) {
        Ok(b) => {
            let c: CloudConfig = serde_json::from_slice(&b)
                .map_err(|e| MsdpError::Refused(format!("{}: {e}", p.display())))?;
            Ok(Arc::new(S3::open(&c)?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Arc::new(LocalDir)),
        Err(e) => Err(MsdpError::io(p.display().to_string(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> CloudConfig {
        CloudConfig {
            url: url.into(),
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            credentials_file: "/etc/kmsfs/s3.creds".into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            owner: None,
        }
    }

    #[test]
    fn settings_written_before_the_timeout_existed_still_read() {
        let old = r#"{"url":"s3://b-1/p","endpoint":"http://h:1","region":"r",
            "credentials_file":"/c","cache_bytes":7}"#;
        let c: CloudConfig = serde_json::from_str(old).unwrap();
        assert_eq!((c.cache_bytes, c.timeout_secs), (7, DEFAULT_TIMEOUT_SECS));
    }

    #[test]
    fn only_our_names_are_containers() {
        assert_eq!(container_id("000000000000002a.kct"), Some(42));
        for name in [
            "+00000000000002a.kct",
            "000000000000002A.kct",
            "00000000000000002a.kct",
            "2a.kct",
            "ffffffffffffffff.kct",
            "0000000000000000.kct",
            "000000000000002a.kct.fetch",
        ] {
            assert_eq!(container_id(name), None, "{name}");
        }
    }

    #[test]
    fn cloud_urls_are_checked() {
        assert_eq!(
            config("s3://backups-1/site/a").bucket_prefix().unwrap(),
            ("backups-1".into(), "site/a".into())
        );
        assert_eq!(
            config("s3://backups-1").bucket_prefix().unwrap(),
            ("backups-1".into(), String::new())
        );
        for bad in [
            "backups",
            "s3://B",
            "s3://ab",
            "s3://b1/../x",
            "s3://b1/a//b",
            "http://b1",
        ] {
            assert!(config(bad).bucket_prefix().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_come_from_the_default_section() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        std::fs::write(
            &p,
            "[other]\naws_access_key_id = X\naws_secret_access_key = Y\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        let (id, s) = read_credentials(&p).unwrap();
        assert_eq!((id.as_str(), s.as_str()), ("AK", "SK"));
        std::fs::write(
            &p,
            "[backup]\naws_access_key_id = B\naws_secret_access_key = BS\n",
        )
        .unwrap();
        let (id, s) = read_credentials(&p).unwrap();
        assert_eq!((id.as_str(), s.as_str()), ("B", "BS"));
        // A key id of one section never goes with another's secret.
        std::fs::write(
            &p,
            "[a]\naws_access_key_id = A\n[default]\naws_secret_access_key = S\n",
        )
        .unwrap();
        assert!(read_credentials(&p).is_err());
        std::fs::write(&p, "aws_access_key_id = AK\n").unwrap();
        let e = read_credentials(&p).unwrap_err().to_string();
        assert!(
            e.contains("aws_secret_access_key") && !e.contains("AK"),
            "{e}"
        );
    }
}
