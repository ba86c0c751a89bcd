//! Shared pieces of the end-to-end tests: a private network namespace per test, the
//! `switchyard` binary (and Janus) as a child process, a tiny HTTP client, where the peers
//! live, and a TURN allocation with a given credential.

pub mod capture;
pub mod cluster;
pub mod http;
pub mod janus;
pub mod mix;
pub mod nat;
pub mod netns;
pub mod peer;
pub mod rabbitmq;
pub mod recordings;
pub mod s3;
pub mod server;
pub mod sip;
pub mod turn;

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
    let bin = target().join("debug").join("switchyard");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p switchyard`) or set SWITCHYARD_BIN; scripts/test.sh does both",
        bin.display()
    );
    bin
}

/// The workspace's target directory: `$CARGO_TARGET_DIR`, else `target` in the repository.
fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// An empty `<target>/artefacts/<name>/`, where a test leaves what people may want to look at
/// afterwards (screenshots); kept until the test runs again.
pub fn artefacts(name: &str) -> PathBuf {
    let dir = target().join("artefacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir.canonicalize().unwrap_or(dir)
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

/// The last JSON line a finished script (`what`: aiortc, a browser script...) printed; panics
/// with its whole output when there is none.
pub fn script_result(out: &std::process::Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    last_json(&stdout).unwrap_or_else(|| {
        panic!(
            "no result from {what}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs a Playwright script of tests/browser with `env`; its JSON result and its stderr.
pub fn run_pages(
    script: &str,
    args: &[String],
    env: &[(&str, String)],
) -> (serde_json::Value, String) {
    let out = std::process::Command::new("node")
        .current_dir(browser_dir())
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run node (Node.js is needed for the browser tests)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (script_result(&out, script), stderr)
}

/// A self-signed certificate for `name` from `switchyard cert`, written into `dir`: the
/// certificate's and the key's paths.
pub fn certificate(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new(binary())
        .args(["cert", "--name", name, "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .expect("run switchyard cert");
    assert!(
        out.status.success(),
        "switchyard cert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The JSON report of a finished `switchyard loadtest run --json`.
///
/// Exit status 2 means the run is not a valid measurement, for the reasons its report lists
/// (`invalid_because`). When the only reason is that the generator fell behind (its send lag
/// or CPU: a scheduling hiccup on a small VM), the run still checked delivery, which callers
/// assert from the report; any other reason (someone not joined, a failed transport, a
/// signalling error, an SRTP authentication failure or replay) fails here. The run's own
/// reasons are read rather than its numbers judged again, so the two cannot drift apart.
pub fn loadtest_report(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report =
        last_json(&stdout).unwrap_or_else(|| panic!("no JSON report:\n{stderr}\n{stdout}"));
    let saturated_only = out.status.code() == Some(2)
        && report["invalid_because"]
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["code"] == "generator_saturated");
    assert!(
        out.status.success() || saturated_only,
        "loadtest failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    report
}
