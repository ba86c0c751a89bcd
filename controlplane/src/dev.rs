//! The development application that `all-in-one` uses when nothing is configured: its secret
//! lives in a file in the data directory, so `switchyard token` run in the same directory signs
//! tokens the server accepts.

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
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)?;
                let secret: String = (0..32)
                    .map(|_| format!("{:02x}", rand::random::<u8>()))
                    .collect();
                let app = DevApplication {
                    application_id: DEV_APPLICATION_ID.into(),
                    secret,
                };
                let json = serde_json::to_vec_pretty(&app).map_err(io::Error::other)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut f) => {
                        f.write_all(&json)?;
                        Ok(app)
                    }
                    // Another process (a concurrent `switchyard token`) made it first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
