//! Shared pieces of the end-to-end tests: a private network namespace per test, the
//! `switchyard` binary (and Janus) as a child process, a tiny HTTP client, and where the peers
//! live.

pub mod cluster;
pub mod http;
pub mod janus;
pub mod netns;
pub mod peer;
pub mod server;

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built `switchyard` binary: `$SWITCHYARD_BIN`, else the workspace's target directory.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let bin = target.join("debug").join("switchyard");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p switchyard`) or set SWITCHYARD_BIN; scripts/test.sh does both",
        bin.display()
    );
    bin
}

/// The Python interpreter with aiortc: `$SWITCHYARD_PYTHON`, else the repository's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh (it creates the venv with aiortc)",
        venv.display()
    );
    venv
}

/// Where the Playwright scripts and their node_modules are.
pub fn browser_dir() -> PathBuf {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing in {}: run scripts/test.sh (npm ci there)",
        dir.display()
    );
    dir
}

/// The last line of `output` that parses as JSON.
pub fn last_json(output: &str) -> Option<serde_json::Value> {
    output
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
}
