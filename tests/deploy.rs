//! Running on a host: the systemd units in deploy/systemd pass `systemd-analyze verify` and keep
//! the exposure score their headers quote, the binary accepts what the units and environment
//! files give it, and `scripts/deb.sh` packages the binary, the units and the environment files
//! (as conffiles).
//!
//! Needs systemd-analyze (Debian's `systemd`), dpkg-deb and readelf; scripts/test.sh installs
//! them. A missing tool fails the test, saying which package has it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use switchyard_tests::server::temp_dir;
use switchyard_tests::{binary, repo};

/// Unit file, the subcommand its ExecStart runs, its environment file in deploy/env.
const UNITS: [(&str, &str, &str); 3] = [
    (
        "switchyard-all-in-one.service",
        "all-in-one",
        "all-in-one.env",
    ),
    ("switchyard-gateway.service", "gateway", "gateway.env"),
    (
        "switchyard-media-server.service",
        "media-server",
        "media-server.env",
    ),
];

/// Where the package puts the binary, and so what the units' ExecStart= names.
const INSTALLED_BINARY: &str = "/usr/bin/switchyard";

/// A temporary directory, removed when the test ends (also when it fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir(temp_dir())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `name` on PATH, or a failure that says which Debian package provides it.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: install Debian's {package} package (scripts/test.sh does)"
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unit_text(unit: &str) -> String {
    read(&repo().join("deploy/systemd").join(unit))
}

/// The value of the one `key=` line of a unit.
fn unit_value<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    let values: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(
        values.len(),
        1,
        "expected one {key}= line, found {values:?}"
    );
    values[0]
}

/// The units in a temporary directory, with ExecStart= pointing at the built binary:
/// `systemd-analyze verify` checks that the program exists.
fn units_with_built_binary(dir: &Path) -> Vec<PathBuf> {
    let built = binary().canonicalize().expect("the switchyard binary");
    UNITS
        .iter()
        .map(|(unit, _, _)| {
            let text = unit_text(unit);
            let exec = unit_value(&text, "ExecStart");
            assert!(
                exec.starts_with(&format!("{INSTALLED_BINARY} ")),
                "{unit}: ExecStart={exec} does not run {INSTALLED_BINARY}"
            );
            let path = dir.join(unit);
            let text = text.replace(
                &format!("ExecStart={INSTALLED_BINARY} "),
                &format!("ExecStart={} ", built.display()),
            );
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// `systemd-analyze verify` accepts every unit without a warning (it warns about unknown keys
/// and bad values, and still exits 0, so the output must be empty too).
#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = TempDir::new();
    let units = units_with_built_binary(&dir.0);
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .args(&units));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

/// The exposure score each unit's header quotes, e.g. "exposure: 1.2 (systemd 252".
fn quoted_score(unit: &str, text: &str) -> f64 {
    let marker = "`systemd-analyze security` exposure: ";
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{unit}: no \"{marker}\" line in the header"));
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{unit}: no score in {line:?}"))
}

/// `systemd-analyze security --offline=true` on a unit file (with drop-ins from `dir`): its
/// report, after checking that it warned about nothing.
fn security(analyze: &Path, dir: &Path, unit: &Path) -> String {
    // A trailing ':' keeps the usual search path after `dir`, where drop-ins are looked for.
    let out = run(Command::new(analyze)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze security {}:\n{stderr}",
        unit.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn overall_exposure(unit: &str, report: &str) -> f64 {
    report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_once(": "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{unit}: no overall exposure in:\n{report}"))
}

/// Hardening does not get weaker than each unit's header says; and the drop-in for ports below
/// 1024 grants CAP_NET_BIND_SERVICE, which the units alone do not.
#[test]
fn units_keep_their_exposure_score() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = TempDir::new();
    let units = units_with_built_binary(&dir.0);
    let bind_cap = "✗ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE";
    for ((unit, _, _), path) in UNITS.iter().zip(&units) {
        let quoted = quoted_score(unit, &unit_text(unit));
        let report = security(&analyze, &dir.0, path);
        let measured = overall_exposure(unit, &report);
        assert!(
            measured <= quoted,
            "{unit}: exposure {measured}, its header quotes {quoted}:\n{report}"
        );
        assert!(
            !report.contains(bind_cap),
            "{unit} may bind ports below 1024"
        );
    }
    // The same units with the drop-in, as `systemctl edit` would place it.
    let drop_in = read(&repo().join("deploy/systemd/bind-privileged-ports.conf"));
    for ((unit, _, _), path) in UNITS.iter().zip(&units) {
        let d = dir.0.join(format!("{unit}.d"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("bind-privileged-ports.conf"), &drop_in).unwrap();
        let report = security(&analyze, &dir.0, path);
        assert!(
            report.contains(bind_cap) && report.contains("✗ AmbientCapabilities="),
            "{unit} with bind-privileged-ports.conf cannot bind ports below 1024:\n{report}"
        );
    }
}

/// `NAME=value` lines of an environment file, the commented-out examples included.
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .filter_map(|l| l.split_once('='))
        .filter(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// What the units and environment files hand the binary, it accepts: each ExecStart= with
/// each SWITCHYARD_ARGS example parses, the settings' examples pass `config print`'s checks
/// under the names it knows, and the media server stops within TimeoutStopSec= even when
/// draining to the end.
#[test]
fn units_and_env_files_fit_the_binary() {
    for (unit, role, env) in UNITS {
        let text = unit_text(unit);
        assert_eq!(
            unit_value(&text, "EnvironmentFile"),
            format!("/etc/switchyard/{env}"),
            "{unit}"
        );
        let env_text = read(&repo().join("deploy/env").join(env));
        let lines = env_lines(&env_text);

        // ExecStart=/usr/bin/switchyard <role> [options] $SWITCHYARD_ARGS
        let exec: Vec<&str> = unit_value(&text, "ExecStart")
            .split_whitespace()
            .skip(1)
            .filter(|a| *a != "$SWITCHYARD_ARGS")
            .collect();
        assert_eq!(exec.first(), Some(&role), "{unit}");
        let mut arg_sets = vec![Vec::new()];
        for (name, value) in &lines {
            if name == "SWITCHYARD_ARGS" {
                arg_sets.push(value.split_whitespace().collect::<Vec<_>>());
            }
        }
        assert!(arg_sets.len() > 1, "{env}: no SWITCHYARD_ARGS line");
        for extra in arg_sets {
            // clap parses every argument before it acts on --help, so a misspelt option or a
            // bad value fails here.
            run(Command::new(binary())
                .args(&exec)
                .args(&extra)
                .arg("--help"));
        }

        // Every setting example at once: `config print` checks each value it knows, and shows
        // the ones it knows with where they came from.
        let settings: Vec<&(String, String)> = lines
            .iter()
            .filter(|(name, value)| name.contains("__") && !value.is_empty())
            .collect();
        let out = run(Command::new(binary())
            .env_clear()
            .args(["config", "print"])
            .envs(settings.iter().map(|s| (&s.0, &s.1))));
        let shown = String::from_utf8(out.stdout).unwrap();
        for (name, _) in &settings {
            let known = shown.contains(&format!("(environment {name})"));
            // The TURN settings come with the TURN server (issue 11), which is being written
            // now; once config.rs knows them, `config print` shows and checks them too.
            assert!(
                known || name.starts_with("TURN__"),
                "{env}: `config print` does not know {name}:\n{shown}"
            );
        }
    }

    let text = unit_text("switchyard-media-server.service");
    let exec = unit_value(&text, "ExecStart");
    let drain: u64 = exec
        .split_once("--drain-timeout ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no --drain-timeout in ExecStart={exec}"));
    let stop: u64 = unit_value(&text, "TimeoutStopSec").parse().unwrap();
    // After the drain: up to 5 s for the last heartbeat, 5 s for the workers' events, 2 s for
    // the runtime (switchyard/src/roles.rs).
    assert!(
        stop >= drain + 12,
        "TimeoutStopSec={stop} leaves no time to stop after a {drain} s drain"
    );
}

/// `dpkg-deb -c`: (path, mode, owner, size) of each entry.
fn listing(deb: &Path) -> Vec<(String, String, String, u64)> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            // -rw-r--r-- root/root      4378 2026-01-01 12:00 ./lib/systemd/system/x.service
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "unexpected dpkg-deb -c line {l:?}");
            let path = f[5].trim_start_matches('.').to_string();
            (
                path,
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// `scripts/deb.sh` packages the given binary, the three units and the three environment files
/// (as conffiles, readable by root only), with the workspace's version.
#[test]
fn deb_holds_binary_units_and_conffiles() {
    tool("dpkg-deb", "dpkg");
    tool("readelf", "binutils");
    let dir = TempDir::new();
    let bin = binary();
    let out = run(Command::new(repo().join("scripts/deb.sh"))
        .args(["--compression", "none", "--out"])
        .arg(&dir.0)
        .arg(&bin));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let deb = PathBuf::from(stdout.lines().last().expect("deb.sh printed nothing"));
    let version = env!("CARGO_PKG_VERSION").replace('-', "~");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("scripts/deb.sh packages amd64 and arm64 binaries, not {other}"),
    };
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("switchyard_{version}_{arch}.deb"),
        "{stdout}"
    );
    assert!(deb.starts_with(&dir.0));

    let files = listing(&deb);
    let entry = |path: &str| {
        files
            .iter()
            .find(|(p, ..)| p == path)
            .unwrap_or_else(|| panic!("{path} is not in the package: {files:#?}"))
    };
    let same_size = |path: &str, mode: &str, source: &Path| {
        let (_, m, owner, size) = entry(path);
        assert_eq!((m.as_str(), owner.as_str()), (mode, "root/root"), "{path}");
        let expected = std::fs::metadata(source).unwrap().len();
        assert_eq!(*size, expected, "{path} is not {}", source.display());
    };
    same_size("/usr/bin/switchyard", "-rwxr-xr-x", &bin);
    for (unit, _, env) in UNITS {
        same_size(
            &format!("/lib/systemd/system/{unit}"),
            "-rw-r--r--",
            &repo().join("deploy/systemd").join(unit),
        );
        same_size(
            &format!("/etc/switchyard/{env}"),
            "-rw-------",
            &repo().join("deploy/env").join(env),
        );
    }
    // Those, the documentation, and nothing else (a stray file from the staging directory, say).
    let packaged: BTreeSet<&str> = files
        .iter()
        .filter(|(_, mode, ..)| !mode.starts_with('d'))
        .map(|(path, ..)| path.as_str())
        .collect();
    let mut expected: BTreeSet<String> = [
        "/usr/bin/switchyard",
        "/usr/share/doc/switchyard/copyright",
        "/usr/share/doc/switchyard/README.md",
        "/usr/share/doc/switchyard/examples/bind-privileged-ports.conf",
    ]
    .map(String::from)
    .into();
    for (unit, _, env) in UNITS {
        expected.insert(format!("/lib/systemd/system/{unit}"));
        expected.insert(format!("/etc/switchyard/{env}"));
    }
    assert_eq!(packaged, expected.iter().map(String::as_str).collect());

    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    let conffiles: BTreeSet<String> = String::from_utf8(conffiles.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = UNITS
        .iter()
        .map(|(_, _, env)| format!("/etc/switchyard/{env}"))
        .collect();
    assert_eq!(conffiles, expected);

    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ]));
    let fields = String::from_utf8(fields.stdout).unwrap();
    for want in [
        "Package: switchyard\n".to_string(),
        format!("Version: {version}\n"),
        format!("Architecture: {arch}\n"),
    ] {
        assert!(fields.contains(&want), "no {want:?} in\n{fields}");
    }
    // The user the units run as is made by postinst with adduser; the binary needs glibc.
    assert!(
        fields.contains("adduser") && fields.contains("libc6 (>= 2."),
        "{fields}"
    );
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let info = String::from_utf8(info.stdout).unwrap();
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script} in\n{info}");
    }
}
