//! Object storage for the recording roles (S3 and S3-compatible, Azure, GCS, or a local
//! directory, through `object_store`): every object's key is its path under the recordings
//! directory (`<channel>/<file>`, `sessions/<id>.mkv`), below the storage URL's prefix, so a
//! file has one name on every machine. Uploads are verified (size, and the ETag the upload
//! returned); downloads land under a temporary name and are renamed once whole.
//!
//! The calls block: the recording roles run them on threads of their own, each client with a
//! small runtime of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, RetryConfig};
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload, WriteMultipart};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files above this size go up in parts (S3 takes at most 5 GB in one PUT; parts keep memory
/// bounded and a retry cheaper).
pub const MULTIPART_ABOVE: u64 = 16 << 20;
/// Part size, and the parts in flight at once.
const PART: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;
/// How long one request is retried inside the store's client before the caller's own retry
/// takes over: short, because the roles work in passes a few seconds apart.
const REQUEST_RETRY: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage URL {0:?}: {1}")]
    Url(String, String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {source}")]
    Store {
        key: String,
        source: object_store::Error,
    },
    #[error("{key}: stored {stored} bytes of {local}")]
    Size {
        key: String,
        stored: u64,
        local: u64,
    },
    #[error("{key}: stored ETag {stored:?}, the upload said {uploaded:?}")]
    ETag {
        key: String,
        stored: Option<String>,
        uploaded: Option<String>,
    },
    #[error("{0}: not under the recordings directory, or not a session the monitor wrote")]
    Session(PathBuf),
}

/// An object the mover verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// Its key under the storage URL.
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

/// An object listed: its key under the storage URL, size and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// When it was last written, in ms since the Unix epoch.
    pub modified_ms: i64,
}

/// A client of one storage URL.
pub struct Objects {
    store: Box<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Objects {
    /// A client of `url` (`s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`,
    /// `file:///dir`), the cloud stores configured from the environment as `object_store`
    /// names it (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_*`,
    /// `GOOGLE_*`, ...).
    pub fn new(url: &str) -> Result<Objects, Error> {
        let bad = |e: &dyn std::fmt::Display| Error::Url(url.to_string(), e.to_string());
        let parsed = url::Url::parse(url).map_err(|e| bad(&e))?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(&e))?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 4,
            retry_timeout: REQUEST_RETRY,
        };
        let store: Box<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => Box::new(LocalFileSystem::new()),
            ObjectStoreScheme::AmazonS3 => Box::new(
                AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(&e))?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Box::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(&e))?,
            ),
            ObjectStoreScheme::GoogleCloudStorage => Box::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(&e))?,
            ),
            other => {
                return Err(bad(&format!(
                    "{other:?} is not a storage the recordings go to"
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                path: PathBuf::from("(runtime)"),
                source,
            })?;
        Ok(Objects {
            store,
            prefix,
            url: url.trim_end_matches('/').to_string(),
            runtime,
        })
    }

    /// The storage URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object URL of `key`.
    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Uploads `file` (under `dir`, the recordings directory) to its key and verifies the
    /// stored object.
    pub fn put_file(&self, dir: &Path, file: &Path) -> Result<Stored, Error> {
        self.runtime.block_on(self.upload(dir, file))
    }

    async fn upload(&self, dir: &Path, file: &Path) -> Result<Stored, Error> {
        let under = relative(dir, file).ok_or_else(|| Error::Session(file.to_path_buf()))?;
        let key = self.path(&under);
        let name = key.to_string();
        let io = |source| Error::Io {
            path: file.to_path_buf(),
            source,
        };
        let store = |source| Error::Store {
            key: name.clone(),
            source,
        };
        let local = std::fs::metadata(file).map_err(io)?.len();
        let uploaded = if local > MULTIPART_ABOVE {
            let mut source = tokio::fs::File::open(file).await.map_err(io)?;
            let upload = self.store.put_multipart(&key).await.map_err(store)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut chunk = vec![0; PART];
            loop {
                let n = source.read(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(store)?;
                writer.write(&chunk[..n]);
            }
            writer.finish().await.map_err(store)?
        } else {
            let bytes = tokio::fs::read(file).await.map_err(io)?;
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(store)?
        };
        let meta = self.store.head(&key).await.map_err(store)?;
        if meta.size != local {
            return Err(Error::Size {
                key: name,
                stored: meta.size,
                local,
            });
        }
        if uploaded.e_tag.is_some() && meta.e_tag.is_some() && uploaded.e_tag != meta.e_tag {
            return Err(Error::ETag {
                key: name,
                stored: meta.e_tag,
                uploaded: uploaded.e_tag,
            });
        }
        Ok(Stored {
            key: under,
            size: local,
            e_tag: meta.e_tag,
        })
    }

    /// Uploads `bytes` as `key` (a file's contents read once, so what is stored is what was
    /// read) and verifies the stored size.
    pub fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<Stored, Error> {
        let path = self.path(key);
        let store = |source| Error::Store {
            key: path.to_string(),
            source,
        };
        let local = bytes.len() as u64;
        self.runtime.block_on(async {
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(store)?;
            let meta = self.store.head(&path).await.map_err(store)?;
            if meta.size != local {
                return Err(Error::Size {
                    key: path.to_string(),
                    stored: meta.size,
                    local,
                });
            }
            Ok(Stored {
                key: key.to_string(),
                size: local,
                e_tag: meta.e_tag,
            })
        })
    }

    /// The object `key`, if there is one.
    pub fn head(&self, key: &str) -> Result<Option<Listed>, Error> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(Listed {
                key: key.to_string(),
                size: meta.size,
                e_tag: meta.e_tag,
                modified_ms: meta.last_modified.timestamp_millis(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Store {
                key: path.to_string(),
                source,
            }),
        }
    }

    /// Downloads `key` to its path under `dir` (written as `<path>.part`, renamed once whole);
    /// returns that path. A key that would leave `dir` is refused.
    pub fn get_file(&self, key: &str, dir: &Path) -> Result<PathBuf, Error> {
        let inside = Path::new(key)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || key.is_empty() {
            return Err(Error::Session(PathBuf::from(key)));
        }
        let to = dir.join(key);
        let io = |source| Error::Io {
            path: to.clone(),
            source,
        };
        let store = |source| Error::Store {
            key: key.to_string(),
            source,
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut part = to.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        self.runtime.block_on(async {
            let got = self.store.get(&self.path(key)).await.map_err(store)?;
            let size = got.meta.size;
            let mut out = tokio::fs::File::create(&part).await.map_err(io)?;
            let mut body = got.into_stream();
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(store)?;
                out.write_all(&chunk).await.map_err(io)?;
                written += chunk.len() as u64;
            }
            out.flush().await.map_err(io)?;
            if written != size {
                return Err(Error::Size {
                    key: key.to_string(),
                    stored: size,
                    local: written,
                });
            }
            Ok(())
        })?;
        std::fs::rename(&part, &to).map_err(io)?;
        Ok(to)
    }

    /// Every object under `under` (a key prefix ending in `/`, or empty for all), keys
    /// relative to the storage URL.
    pub fn list(&self, under: &str) -> Result<Vec<Listed>, Error> {
        let prefix = self.path(under.trim_end_matches('/'));
        let strip = if self.prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let root = self.prefix.as_ref().is_empty() && under.is_empty();
        self.runtime.block_on(async {
            let mut objects = Vec::new();
            let mut listing = self.store.list(if root { None } else { Some(&prefix) });
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|source| Error::Store {
                    key: prefix.to_string(),
                    source,
                })?;
                let key = meta.location.to_string();
                let Some(key) = key.strip_prefix(strip.as_str()) else {
                    continue;
                };
                objects.push(Listed {
                    key: key.to_string(),
                    size: meta.size,
                    e_tag: meta.e_tag,
                    modified_ms: meta.last_modified.timestamp_millis(),
                });
            }
            Ok(objects)
        })
    }
}

/// `file`'s path under `dir`, `/`-separated (its key under the storage URL); `None` for a file
/// outside `dir`.
pub fn relative(dir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(dir).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}
