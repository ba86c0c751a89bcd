//! The development application that `all-in-one` uses when nothing is configured: its secret
//! lives in a file in the data directory, so `switchyard token` run in the same directory signs
//! tokens the server accepts. The gateway's generated admin API key lives there too.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEV_APPLICATION_ID: &str = "dev";
const FILE: &str = "dev-application.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevApplication {
    pub application_id: String,
    pub secret: String,
}

impl DevApplication {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Reads the dev application from `data_dir`, creating the directory and a fresh secret
    /// (readable only by this user) if there is none.
    pub fn load_or_create(data_dir: &Path) -> io::Result<DevApplication> {
        let path = Self::path(data_dir);
        let fresh = || {
            let app = DevApplication {
                application_id: DEV_APPLICATION_ID.into(),
                secret: random_hex(32),
            };
            serde_json::to_vec_pretty(&app).map_err(io::Error::other)
        };
        let bytes = read_or_create_private(data_dir, &path, fresh)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

/// The admin API key kept in the data directory when `ADMIN:APIKEY` is not set: created on first
/// use, like the dev application, so a gateway's admin API is never open without a key.
pub fn admin_api_key(data_dir: &Path) -> io::Result<(String, PathBuf)> {
    private_key(data_dir, "admin-api-key")
}

/// The TURN REST secret kept in the data directory when `TURN:SECRET` is not set, so an
/// all-in-one's embedded TURN works with one command and keeps its secret across restarts.
pub fn turn_secret(data_dir: &Path) -> io::Result<(String, PathBuf)> {
    private_key(data_dir, "turn-secret")
}

/// A random key in `data_dir/name`, created on first use, readable only by this user.
fn private_key(data_dir: &Path, name: &str) -> io::Result<(String, PathBuf)> {
    let path = data_dir.join(name);
    let bytes = read_or_create_private(data_dir, &path, || Ok(random_hex(24).into_bytes()))?;
    let key = String::from_utf8(bytes)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?
        .trim()
        .to_string();
    if key.len() < 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: the key must be at least 16 characters", path.display()),
        ));
    }
    Ok((key, path))
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The file's bytes, or `fresh()` written to a new file readable only by this user. When two
/// processes create it at once, the loser reads the winner's.
fn read_or_create_private(
    dir: &Path,
    path: &Path,
    fresh: impl Fn() -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let bytes = fresh()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut f) => {
                    f.write_all(&bytes)?;
                    Ok(bytes)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::read(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("switchyard-dev-{}", rand::random::<u64>()));
        let a = DevApplication::load_or_create(&dir).unwrap();
        let b = DevApplication::load_or_create(&dir).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.application_id, "dev");
        assert_eq!(a.secret.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(DevApplication::path(&dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(DevApplication::path(&dir), b"not json").unwrap();
        assert!(DevApplication::load_or_create(&dir).is_err());
        let (key, path) = admin_api_key(&dir).unwrap();
        assert_eq!(key.len(), 48);
        assert_eq!(admin_api_key(&dir).unwrap(), (key, path));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
