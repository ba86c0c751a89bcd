//! The mover: a muxed session's files to object storage (S3 and S3-compatible, Azure, GCS, or
//! a local directory, through `object_store`), the local copies deleted only after the upload
//! is verified.
//!
//! A session's JSON (`sessions/<id>.json`, which the monitor writes when it muxed the session)
//! names its files: the muxed file and the recordings it was made of. The mover uploads each
//! under `<prefix>/<path in the recordings directory>` (multipart above [`MULTIPART_ABOVE`]),
//! checks the stored object's size against the local file (and its ETag against the one the
//! upload returned), uploads copies of the recordings' JSON logs, and only then deletes the
//! local media files. It then adds `storage` to the session's JSON (kept locally, and uploaded
//! too), which marks the session moved; the small JSON files stay, so the monitor knows the
//! session is done.
//!
//! Every step can be repeated: a mover stopped midway (a crash, the storage down) uploads the
//! session again at its next pass, since nothing was deleted before every object was verified.
//! A failed session waits before its next try, doubling from 2 s to 5 minutes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, RetryConfig};
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload, WriteMultipart};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::monitor::SESSIONS;

/// Files above this size go up in parts (S3 takes at most 5 GB in one PUT; parts keep memory
/// bounded and a retry cheaper).
pub const MULTIPART_ABOVE: u64 = 16 << 20;
/// Part size, and the parts in flight at once.
const PART: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;
const FIRST_RETRY: Duration = Duration::from_secs(2);
const LAST_RETRY: Duration = Duration::from_secs(300);
/// How long one request is retried inside the store's client before the session's own retry
/// takes over: short, because the mover runs between the monitor's passes.
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
    #[error("{0}: not a session the monitor wrote")]
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

/// What a session's JSON gets once it is moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Where the objects are: the storage URL.
    pub url: String,
    /// The muxed file's object URL.
    pub muxed: Option<String>,
    pub objects: Vec<Stored>,
    /// When, in ms since the Unix epoch.
    pub moved_at: u64,
}

/// The mover of one recordings directory to one storage URL.
pub struct Mover {
    store: Box<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    runtime: tokio::runtime::Runtime,
    /// Sessions that failed: when to try again, and the wait after that.
    retry: HashMap<PathBuf, (Instant, Duration)>,
}

impl Mover {
    /// A mover to `url` (`s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`,
    /// `file:///dir`), the cloud stores configured from the environment as `object_store`
    /// names it (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_*`,
    /// `GOOGLE_*`, ...).
    pub fn new(url: &str) -> Result<Mover, Error> {
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
            other => return Err(bad(&format!("{other:?} is not a storage the mover writes"))),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                path: PathBuf::from("(runtime)"),
                source,
            })?;
        Ok(Mover {
            store,
            prefix,
            url: url.trim_end_matches('/').to_string(),
            runtime,
            retry: HashMap::new(),
        })
    }

    /// One pass over `dir` (the recordings directory): every muxed session not moved yet and not
    /// waiting to retry is moved. Returns the sessions moved now; failures are logged and
    /// retried later.
    pub fn pass(&mut self, dir: &Path) -> Vec<(PathBuf, Storage)> {
        let sessions = dir.join(SESSIONS);
        let Ok(entries) = std::fs::read_dir(&sessions) else {
            return Vec::new();
        };
        let mut jsons: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        jsons.sort();
        let now = Instant::now();
        let mut moved = Vec::new();
        for json in jsons {
            if self.retry.get(&json).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            match self.move_session(dir, &json) {
                Ok(Some(storage)) => {
                    self.retry.remove(&json);
                    tracing::info!(session = ?json, objects = storage.objects.len(), url = %storage.url, "session moved to storage");
                    moved.push((json, storage));
                }
                Ok(None) => {}
                Err(e) => {
                    let wait = self
                        .retry
                        .get(&json)
                        .map_or(FIRST_RETRY, |(_, w)| (*w * 2).min(LAST_RETRY));
                    tracing::warn!(session = ?json, retry_in_s = wait.as_secs(), "session not moved: {e}");
                    self.retry.insert(json, (now + wait, wait));
                }
            }
        }
        moved
    }

    /// Moves the session of `json`; `None` if it needs no move (moved already, or not muxed).
    pub fn move_session(&self, dir: &Path, json: &Path) -> Result<Option<Storage>, Error> {
        let io = |source| Error::Io {
            path: json.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(json).map_err(io)?;
        let mut session: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| Error::Session(json.to_path_buf()))?;
        if !session["storage"].is_null() || !session["error"].is_null() {
            return Ok(None);
        }
        let Some(muxed) = session["path"].as_str().map(PathBuf::from) else {
            return Err(Error::Session(json.to_path_buf()));
        };
        let inputs: Vec<PathBuf> = session["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["file"].as_str().map(PathBuf::from))
                    .collect()
            })
            .unwrap_or_default();
        let media: Vec<PathBuf> = std::iter::once(muxed.clone()).chain(inputs).collect();
        // The logs of the channels the recordings are in, copied (they stay here).
        let mut logs: Vec<PathBuf> = Vec::new();
        for channel in media.iter().filter_map(|m| m.parent()) {
            if channel.ends_with(SESSIONS) {
                continue;
            }
            for entry in std::fs::read_dir(channel).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.extension().is_some_and(|e| e == "json") && !logs.contains(&path) {
                    logs.push(path);
                }
            }
        }

        let mut objects = Vec::new();
        self.runtime.block_on(async {
            for file in media.iter().chain(&logs) {
                // A media file gone already was deleted by an earlier pass after its upload was
                // verified; the session JSON just was not updated before it stopped.
                if !file.exists() {
                    continue;
                }
                objects.push(self.upload(dir, file).await?);
            }
            Ok::<(), Error>(())
        })?;

        let storage = Storage {
            url: self.url.clone(),
            muxed: relative(dir, &muxed).map(|r| format!("{}/{r}", self.url)),
            objects,
            moved_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        // Every object verified: the local media can go.
        for file in &media {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: file.clone(),
                        source,
                    });
                }
            }
        }
        let bad = |_| Error::Session(json.to_path_buf());
        session["storage"] = serde_json::to_value(&storage).map_err(bad)?;
        let text = serde_json::to_vec_pretty(&session).map_err(bad)?;
        // Written whole under another name, then renamed: never a half-written session.
        let partial = json.with_extension("json.partial");
        std::fs::write(&partial, &text).map_err(io)?;
        std::fs::rename(&partial, json).map_err(io)?;
        self.runtime.block_on(self.upload(dir, json))?;
        Ok(Some(storage))
    }

    /// Uploads `file` (under `dir`) and verifies the stored object.
    async fn upload(&self, dir: &Path, file: &Path) -> Result<Stored, Error> {
        let under = relative(dir, file).ok_or_else(|| Error::Session(file.to_path_buf()))?;
        let name = if self.prefix.as_ref().is_empty() {
            under.clone()
        } else {
            format!("{}/{under}", self.prefix)
        };
        let key = ObjectPath::from(name.as_str());
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
}

/// `file`'s path under `dir`, `/`-separated (its key under the storage URL); `None` for a file
/// outside `dir`.
fn relative(dir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(dir).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// A recordings directory with one muxed session: (recordings, the session's JSON).
    fn recordings(root: &Path) -> (PathBuf, PathBuf) {
        let dir = root.join("recordings");
        std::fs::create_dir_all(dir.join("room")).unwrap();
        std::fs::create_dir_all(dir.join(SESSIONS)).unwrap();
        std::fs::write(dir.join("room/pub1-0.mkv"), vec![1u8; 1000]).unwrap();
        std::fs::write(dir.join("room/pub1-1.mka"), vec![2u8; 300]).unwrap();
        std::fs::write(dir.join("room/pub1.json"), b"{}\n").unwrap();
        // Above MULTIPART_ABOVE: goes up in parts.
        let muxed = dir.join("sessions/room-1.mkv");
        std::fs::write(&muxed, vec![3u8; MULTIPART_ABOVE as usize + 5]).unwrap();
        let session = serde_json::json!({
            "channelId": "room",
            "path": muxed,
            "inputs": [
                {"file": dir.join("room/pub1-0.mkv")},
                {"file": dir.join("room/pub1-1.mka")},
            ],
            "error": null,
        });
        let json = dir.join("sessions/room-1.json");
        std::fs::write(&json, serde_json::to_vec(&session).unwrap()).unwrap();
        (dir, json)
    }

    #[test]
    fn moves_verifies_then_deletes_and_marks_the_session() {
        let root = std::env::temp_dir().join(format!("sy-mover-{}", std::process::id()));
        let (dir, json) = recordings(&root);
        let bucket = root.join("bucket");
        std::fs::create_dir_all(&bucket).unwrap();
        let url = format!("file://{}/archive", bucket.display());
        let mut mover = Mover::new(&url).unwrap();
        let moved = mover.pass(&dir);
        assert_eq!(moved.len(), 1);
        let storage = &moved[0].1;
        let keys: Vec<&str> = storage.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sessions/room-1.mkv",
                "room/pub1-0.mkv",
                "room/pub1-1.mka",
                "room/pub1.json"
            ]
        );
        assert_eq!(
            storage.muxed.as_deref(),
            Some(format!("{url}/sessions/room-1.mkv").as_str())
        );
        let stored = std::fs::metadata(bucket.join("archive/sessions/room-1.mkv")).unwrap();
        assert_eq!(stored.len(), MULTIPART_ABOVE + 5);
        assert!(bucket.join("archive/sessions/room-1.json").exists());
        // The media went; the JSON stayed, marked.
        assert!(!dir.join("room/pub1-0.mkv").exists());
        assert!(!dir.join("sessions/room-1.mkv").exists());
        assert!(dir.join("room/pub1.json").exists());
        let marked: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(marked["storage"]["objects"].as_array().unwrap().len(), 4);
        assert!(mover.pass(&dir).is_empty(), "moved once");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Storage that refuses every write: nothing is deleted, and the session waits to retry.
    #[test]
    fn a_failed_upload_deletes_nothing() {
        let root = std::env::temp_dir().join(format!("sy-mover-fail-{}", std::process::id()));
        let (dir, json) = recordings(&root);
        // A file where the store's directory should be: every put fails.
        let blocked = root.join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let mut mover = Mover::new(&format!("file://{}", blocked.display())).unwrap();
        assert!(mover.pass(&dir).is_empty());
        assert!(mover.move_session(&dir, &json).is_err());
        assert!(dir.join("room/pub1-0.mkv").exists());
        assert!(dir.join("sessions/room-1.mkv").exists());
        let unmarked: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(unmarked["storage"].is_null());
        // Waiting to retry: the next pass does not try.
        assert!(mover.retry.contains_key(&json));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
