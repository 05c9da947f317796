//! Where backups are kept: a directory, or a bucket (and prefix) of an
//! S3-compatible object store. Both hold, per backup, the artifact
//! (`ID.EXT.zst`) and its manifest (`ID.json`) side by side.
//!
//! Nothing half written ever looks like a backup: an artifact is written under
//! a temporary name (in the directory itself, or in the system's temporary
//! directory before an upload) and moved (renamed, or uploaded in one put or
//! one multipart upload that only appears when completed) once whole; the
//! manifest, which is what `list` reads, comes last. Deleting goes the other
//! way: manifest first, then artifact.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sluice_core::config::{Env, RawSecret};
use tokio::io::AsyncReadExt;

use super::BackupError;
use super::manifest::{Manifest, manifest_name};
use super::pipe::Unpacker;
use super::source::{BackupSource, io_err};

/// Files above this size are uploaded in parts.
const MULTIPART_ABOVE: u64 = 16 << 20;
/// The size of an upload part.
const PART: usize = 8 << 20;

/// Where backups go, as configured (nothing opened, no secret read yet).
#[allow(clippy::large_enum_variant, reason = "built once per run")]
#[derive(Debug, Clone)]
pub enum DestinationSpec {
    /// A directory (created when missing).
    Dir(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Spec),
}

/// An S3-compatible bucket, as configured.
#[derive(Debug, Clone, Default)]
pub struct S3Spec {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (a "folder"), without slashes at its ends; may be empty.
    pub prefix: String,
    /// The endpoint (`http://127.0.0.1:9000` for MinIO); `None` for AWS.
    pub endpoint: Option<String>,
    /// The region. Default `us-east-1`.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<RawSecret>,
    /// The secret access key.
    pub secret_access_key: Option<RawSecret>,
    /// Take what is not given from the `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`,
    /// `AWS_REGION`, `AWS_ALLOW_HTTP`), as `--from s3://…` does.
    pub from_env: bool,
}

impl DestinationSpec {
    /// A location as written on the command line: `s3://BUCKET/PREFIX`
    /// (credentials and endpoint from the `AWS_*` environment variables), or
    /// a directory.
    ///
    /// # Errors
    ///
    /// [`BackupError::Invalid`] for an `s3://` location without a bucket.
    pub fn parse_location(location: &str) -> Result<Self, BackupError> {
        let Some(rest) = location.strip_prefix("s3://") else {
            return Ok(Self::Dir(PathBuf::from(location)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BackupError::Invalid(format!(
                "{location:?} names no bucket; write s3://BUCKET/PREFIX"
            )));
        }
        Ok(Self::S3(S3Spec {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            from_env: true,
            ..S3Spec::default()
        }))
    }

    /// Opens it: reads the S3 secrets and builds the client (no request yet).
    ///
    /// # Errors
    ///
    /// A secret that cannot be read, or an S3 configuration the client refuses.
    pub fn open(&self) -> Result<Destination, BackupError> {
        match self {
            Self::Dir(d) => Ok(Destination::Dir(d.clone())),
            Self::S3(s) => s.open(),
        }
    }
}

impl S3Spec {
    fn open(&self) -> Result<Destination, BackupError> {
        let env = Env::process();
        let read = |key: &str, s: &Option<RawSecret>| -> Result<Option<String>, BackupError> {
            s.as_ref()
                .map(|s| {
                    s.read(&env)
                        .map(|v| v.expose().to_owned())
                        .map_err(|e| BackupError::Secret {
                            key: key.to_owned(),
                            message: e.message,
                        })
                })
                .transpose()
        };
        let mut b = if self.from_env {
            AmazonS3Builder::from_env()
        } else {
            AmazonS3Builder::new().with_region("us-east-1")
        };
        b = b.with_bucket_name(&self.bucket);
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(e) = &self.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(k) = read("access_key_id", &self.access_key_id)? {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = read("secret_access_key", &self.secret_access_key)? {
            b = b.with_secret_access_key(k);
        }
        let store = b.build().map_err(|e| BackupError::Store(e.to_string()))?;
        Ok(Destination::S3 {
            store: Arc::new(store),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        })
    }
}

/// An opened destination. Its `Debug` is its `Display` (`s3://bucket/prefix`
/// or the directory): the client holds the keys.
#[derive(Clone)]
pub enum Destination {
    /// A directory.
    Dir(PathBuf),
    /// A bucket and prefix.
    S3 {
        /// The client.
        store: Arc<AmazonS3>,
        /// The bucket (for messages).
        bucket: String,
        /// The key prefix, possibly empty.
        prefix: String,
    },
}

/// A manifest as found: read, or why it could not be.
#[derive(Debug, Clone)]
pub enum Listed {
    /// A readable manifest.
    Ok(Manifest),
    /// A manifest file that is not one (its name, and why).
    Broken {
        /// The file (object) name.
        name: String,
        /// What is wrong.
        error: String,
    },
}

/// What [`Destination::verify`] found in a good backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Bytes of the artifact.
    pub compressed: u64,
    /// Bytes decompressed.
    pub raw: u64,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Destination({self})")
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(d) => write!(f, "{}", d.display()),
            Self::S3 { bucket, prefix, .. } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

fn store_err(e: object_store::Error) -> BackupError {
    BackupError::Store(e.to_string())
}

impl Destination {
    fn key(prefix: &str, name: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{prefix}/{name}"))
        }
    }

    /// Where an artifact is written before it is moved into place.
    pub(crate) fn staging(&self) -> PathBuf {
        match self {
            Self::Dir(d) => d.clone(),
            Self::S3 { .. } => std::env::temp_dir(),
        }
    }

    /// Makes the directory, and removes what a crashed backup left in it
    /// (its `.*.tmp` files).
    pub(crate) async fn prepare(&self) -> Result<(), BackupError> {
        let Self::Dir(d) = self else { return Ok(()) };
        tokio::fs::create_dir_all(d)
            .await
            .map_err(|e| io_err(&format!("creating {}", d.display()), e))?;
        let mut entries = tokio::fs::read_dir(d)
            .await
            .map_err(|e| io_err(&format!("reading {}", d.display()), e))?;
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                tracing::info!(file = %name, "removing what an interrupted backup left");
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
        Ok(())
    }

    /// Moves the finished local file `local` into place as `name`.
    pub(crate) async fn store(&self, local: &Path, name: &str) -> Result<(), BackupError> {
        match self {
            Self::Dir(d) => {
                let to = d.join(name);
                tokio::fs::rename(local, &to)
                    .await
                    .map_err(|e| io_err(&format!("moving the artifact to {}", to.display()), e))
            }
            Self::S3 { store, prefix, .. } => {
                let res = upload(store, &Self::key(prefix, name), local).await;
                let _ = tokio::fs::remove_file(local).await;
                res
            }
        }
    }

    /// Writes `m` (last: it makes the backup visible).
    pub(crate) async fn put_manifest(&self, m: &Manifest) -> Result<(), BackupError> {
        let body = serde_json::to_vec_pretty(m).map_err(|e| BackupError::Invalid(e.to_string()))?;
        match self {
            Self::Dir(d) => {
                let tmp = d.join(format!(".{}.tmp", m.file_name()));
                let to = d.join(m.file_name());
                let write = || -> io::Result<()> {
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&body)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &to)?;
                    // The renames reach the disk with the directory.
                    if let Ok(dir) = std::fs::File::open(d) {
                        let _ = dir.sync_all();
                    }
                    Ok(())
                };
                write().map_err(|e| io_err(&format!("writing {}", to.display()), e))
            }
            Self::S3 { store, prefix, .. } => store
                .put(&Self::key(prefix, &m.file_name()), PutPayload::from(body))
                .await
                .map(drop)
                .map_err(store_err),
        }
    }

    /// Every manifest here, oldest first (broken ones last).
    ///
    /// # Errors
    ///
    /// The directory or the bucket cannot be listed.
    pub async fn list(&self) -> Result<Vec<Listed>, BackupError> {
        let mut out = Vec::new();
        match self {
            Self::Dir(d) => {
                let mut entries = match tokio::fs::read_dir(d).await {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(io_err(&format!("reading {}", d.display()), e)),
                };
                while let Some(e) = entries
                    .next_entry()
                    .await
                    .map_err(|e| io_err(&format!("reading {}", d.display()), e))?
                {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || !name.ends_with(".json") {
                        continue;
                    }
                    out.push(match tokio::fs::read(e.path()).await {
                        Ok(bytes) => parse(&name, &bytes),
                        Err(e) => Listed::Broken {
                            name,
                            error: e.to_string(),
                        },
                    });
                }
            }
            Self::S3 { store, prefix, .. } => {
                let under = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                let mut names = Vec::new();
                let mut objects = store.list(under.as_ref());
                while let Some(o) = objects.next().await {
                    let o = o.map_err(store_err)?;
                    let Some(name) = o.location.filename().map(str::to_owned) else {
                        continue;
                    };
                    // Only this prefix's own objects, not those of a deeper one.
                    if o.location != Self::key(prefix, &name) {
                        continue;
                    }
                    if name.ends_with(".json") && !name.starts_with('.') {
                        names.push((name, o.location));
                    }
                }
                for (name, at) in names {
                    out.push(match store.get(&at).await {
                        Ok(r) => match r.bytes().await {
                            Ok(b) => parse(&name, &b),
                            Err(e) => Listed::Broken {
                                name,
                                error: e.to_string(),
                            },
                        },
                        Err(e) => Listed::Broken {
                            name,
                            error: e.to_string(),
                        },
                    });
                }
            }
        }
        out.sort_by(|a, b| match (a, b) {
            (Listed::Ok(a), Listed::Ok(b)) => a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)),
            (Listed::Ok(_), Listed::Broken { .. }) => std::cmp::Ordering::Less,
            (Listed::Broken { .. }, Listed::Ok(_)) => std::cmp::Ordering::Greater,
            (Listed::Broken { name: a, .. }, Listed::Broken { name: b, .. }) => a.cmp(b),
        });
        Ok(out)
    }

    /// The manifest of backup `id` (`latest`: the newest one).
    ///
    /// # Errors
    ///
    /// [`BackupError::NotFound`] when there is none, or the listing fails.
    pub async fn find(&self, id: &str) -> Result<Manifest, BackupError> {
        let all: Vec<Manifest> = self
            .list()
            .await?
            .into_iter()
            .filter_map(|l| match l {
                Listed::Ok(m) => Some(m),
                Listed::Broken { .. } => None,
            })
            .collect();
        let found = if id == "latest" {
            all.into_iter().last()
        } else {
            all.into_iter().find(|m| m.id == id)
        };
        found.ok_or_else(|| BackupError::NotFound {
            id: id.to_owned(),
            at: self.to_string(),
        })
    }

    /// The stored size of the artifact of `m` (cheap: no read), `None` when
    /// it is missing.
    ///
    /// # Errors
    ///
    /// The directory or the store cannot be asked.
    pub async fn artifact_size(&self, m: &Manifest) -> Result<Option<u64>, BackupError> {
        match self {
            Self::Dir(d) => match tokio::fs::metadata(d.join(&m.artifact)).await {
                Ok(md) => Ok(Some(md.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(&format!("reading {}", m.artifact), e)),
            },
            Self::S3 { store, prefix, .. } => {
                match store.head(&Self::key(prefix, &m.artifact)).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(store_err(e)),
                }
            }
        }
    }

    /// Feeds the artifact of `m` to `f`, chunk by chunk.
    async fn read_artifact(
        &self,
        m: &Manifest,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), BackupError> {
        let what = || format!("reading artifact {}", m.artifact);
        match self {
            Self::Dir(d) => {
                let mut file = tokio::fs::File::open(d.join(&m.artifact))
                    .await
                    .map_err(|e| io_err(&what(), e))?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file.read(&mut buf).await.map_err(|e| io_err(&what(), e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    f(&buf[..n]).map_err(|e| corrupt(m, &e))?;
                }
            }
            Self::S3 { store, prefix, .. } => {
                let got = store
                    .get(&Self::key(prefix, &m.artifact))
                    .await
                    .map_err(store_err)?;
                let mut chunks = got.into_stream();
                while let Some(c) = chunks.next().await {
                    let c = c.map_err(store_err)?;
                    f(&c).map_err(|e| corrupt(m, &e))?;
                }
                Ok(())
            }
        }
    }

    /// Re-reads the artifact of `m` and checks it: its size and SHA-256
    /// against the manifest, and that it decompresses as a whole zstd stream
    /// to the manifest's raw size.
    ///
    /// # Errors
    ///
    /// [`BackupError::Corrupt`] saying what does not match, or the artifact
    /// cannot be read.
    pub async fn verify(&self, m: &Manifest) -> Result<Verified, BackupError> {
        let mut u = Unpacker::new(io::sink()).map_err(|e| corrupt(m, &e))?;
        self.read_artifact(m, |c| u.push(c)).await?;
        let got = u.finish().map_err(|e| corrupt(m, &e))?;
        check(m, got.compressed, &got.sha256, got.raw)?;
        Ok(Verified {
            compressed: got.compressed,
            raw: got.raw,
        })
    }

    /// Restores backup `m` into `target`: the artifact is checked (as
    /// [`verify`](Self::verify) does) while it is decompressed to a temporary
    /// file, and only a good one is loaded. Returns the bytes loaded.
    ///
    /// # Errors
    ///
    /// A backup of another kind of database than `target`, a corrupt artifact,
    /// or the restore tool failing (with its stderr, scrubbed of the password).
    pub async fn restore(&self, m: &Manifest, target: &BackupSource) -> Result<u64, BackupError> {
        if m.source != target.kind {
            return Err(BackupError::Invalid(format!(
                "backup {} is of a {} database; it cannot be restored into {} ({})",
                m.id,
                m.source,
                target.redacted_url(),
                target.kind
            )));
        }
        // A SQLite file is restored beside its target, then renamed over it.
        let dir = match target.sqlite_path() {
            Some(p) => p
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            None => std::env::temp_dir(),
        };
        let tmp = dir.join(format!(
            ".restore-{}-{:08x}.tmp",
            m.id,
            rand::random::<u32>()
        ));
        let res = self.restore_via(m, target, &tmp).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        res
    }

    async fn restore_via(
        &self,
        m: &Manifest,
        target: &BackupSource,
        tmp: &Path,
    ) -> Result<u64, BackupError> {
        let what = format!("writing {}", tmp.display());
        let file = std::fs::File::create(tmp).map_err(|e| io_err(&what, e))?;
        let mut u = Unpacker::new(io::BufWriter::new(file)).map_err(|e| corrupt(m, &e))?;
        self.read_artifact(m, |c| u.push(c)).await?;
        let got = u.finish().map_err(|e| corrupt(m, &e))?;
        check(m, got.compressed, &got.sha256, got.raw)?;
        let file = got
            .out
            .into_inner()
            .map_err(|e| io_err(&what, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&what, e))?;
        drop(file);
        target.load(tmp).await?;
        Ok(got.raw)
    }

    /// Deletes backup `m`: its manifest, then its artifact.
    pub(crate) async fn delete(&self, m: &Manifest) -> Result<(), BackupError> {
        match self {
            Self::Dir(d) => {
                for name in [m.file_name(), m.artifact.clone()] {
                    match tokio::fs::remove_file(d.join(&name)).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&format!("deleting {name}"), e)),
                    }
                }
                Ok(())
            }
            Self::S3 { store, prefix, .. } => {
                for name in [m.file_name(), m.artifact.clone()] {
                    match store.delete(&Self::key(prefix, &name)).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_err(e)),
                    }
                }
                Ok(())
            }
        }
    }
}

fn parse(name: &str, bytes: &[u8]) -> Listed {
    match serde_json::from_slice::<Manifest>(bytes) {
        Ok(m) if manifest_name(&m.id) == name => Listed::Ok(m),
        Ok(m) => Listed::Broken {
            name: name.to_owned(),
            error: format!("it names backup {:?}", m.id),
        },
        Err(e) => Listed::Broken {
            name: name.to_owned(),
            error: format!("not a backup manifest: {e}"),
        },
    }
}

fn corrupt(m: &Manifest, e: &io::Error) -> BackupError {
    BackupError::Corrupt {
        id: m.id.clone(),
        message: format!("the artifact is not a whole zstd stream: {e}"),
    }
}

fn check(m: &Manifest, compressed: u64, sha256: &str, raw: u64) -> Result<(), BackupError> {
    let bad = |message: String| {
        Err(BackupError::Corrupt {
            id: m.id.clone(),
            message,
        })
    };
    if compressed != m.compressed_bytes {
        return bad(format!(
            "the artifact has {compressed} bytes, the manifest says {}",
            m.compressed_bytes
        ));
    }
    if sha256 != m.sha256 {
        return bad(format!(
            "the artifact's SHA-256 is {sha256}, the manifest says {}",
            m.sha256
        ));
    }
    if raw != m.raw_bytes {
        return bad(format!(
            "the artifact decompresses to {raw} bytes, the manifest says {}",
            m.raw_bytes
        ));
    }
    Ok(())
}

/// Uploads file `local` to `at`: one put when small, else a multipart upload
/// (aborted on failure, so no partial object remains).
async fn upload(store: &AmazonS3, at: &ObjectPath, local: &Path) -> Result<(), BackupError> {
    let what = || format!("reading {}", local.display());
    let len = tokio::fs::metadata(local)
        .await
        .map_err(|e| io_err(&what(), e))?
        .len();
    if len <= MULTIPART_ABOVE {
        let bytes = tokio::fs::read(local)
            .await
            .map_err(|e| io_err(&what(), e))?;
        return store
            .put(at, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(store_err);
    }
    let upload = store.put_multipart(at).await.map_err(store_err)?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| io_err(&what(), e))?;
    let mut buf = vec![0u8; PART];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = w.abort().await;
                return Err(io_err(&what(), e));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = w.wait_for_capacity(4).await {
            let _ = w.abort().await;
            return Err(store_err(e));
        }
        w.write(&buf[..n]);
    }
    w.finish().await.map(drop).map_err(store_err)
}
