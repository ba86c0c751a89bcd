//! The aiortc MCU participants (`tests/aiortc/mix.py`) and what their results must show: the
//! all-in-one's MCU tests (tests/mcu.rs) and the cluster's (tests/cluster.rs) run the same.

use std::process::Command;

use crate::{python, repo, script_result};

/// Runs mix.py against `base` for `seconds`: one participant per token, of which the first
/// `publishers` publish over WHIP (SFU publishers) and the others mix in `codec`; `viewer`
/// plays the mix over `POST /whep/{channel}/mix`. Returns the script's result.
pub fn run(
    base: &str,
    channel: &str,
    tokens: &[String],
    viewer: &str,
    publishers: usize,
    codec: &str,
    seconds: u32,
) -> serde_json::Value {
    run_with(
        base,
        channel,
        tokens,
        viewer,
        publishers,
        codec,
        seconds,
        &[],
    )
}

/// [`run`] with more arguments for mix.py (`--stagger S`: the others join S seconds after
/// the publishers).
#[allow(clippy::too_many_arguments)]
pub fn run_with(
    base: &str,
    channel: &str,
    tokens: &[String],
    viewer: &str,
    publishers: usize,
    codec: &str,
    seconds: u32,
    extra: &[&str],
) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo().join("tests/aiortc/mix.py"))
        .arg(base)
        .arg(channel)
        .args(tokens)
        .args(["--seconds", &seconds.to_string(), "--codec", codec])
        .args(["--publishers", &publishers.to_string()])
        .args(["--viewer", viewer])
        .args(extra)
        .output()
        .expect("run the aiortc script");
    script_result(&out, "aiortc mix")
}

/// Every MCU participant and the viewer got composites of the small test canvas (320x180)
/// with every participant's colour, and heard the others' tones (the viewer: everyone's) but
/// not its own; every session's `DELETE` was answered 200.
pub fn check(result: &serde_json::Value, participants: usize) {
    assert_eq!(result["ok"], true, "{result:#}");
    let people = result["participants"].as_array().expect("participants");
    for (i, p) in people.iter().enumerate() {
        if p["publisher"] == true {
            continue;
        }
        assert!(
            p["frames"].as_u64().unwrap_or(0) >= 30,
            "participant {i} got too few composites: {result:#}"
        );
        assert_eq!(
            p["size"],
            serde_json::json!([320, 180]),
            "participant {i}: {result:#}"
        );
        let colours = p["colours"].as_array().expect("colours");
        for (j, seen) in colours.iter().enumerate().take(participants) {
            assert_eq!(
                seen, true,
                "participant {i} does not see {j}'s colour: {result:#}"
            );
        }
        let tones: Vec<f64> = p["tones_db"]
            .as_array()
            .expect("tones")
            .iter()
            .map(|t| t.as_f64().unwrap_or(f64::NAN))
            .collect();
        // The viewer (POST /whep/{channel}/mix) sends nothing and hears everyone.
        let own = (p["viewer"] != true).then_some(i);
        let others = tones.iter().enumerate().filter(|&(j, _)| Some(j) != own);
        let weakest = others
            .clone()
            .map(|(_, &db)| db)
            .fold(f64::INFINITY, f64::min);
        for (j, &db) in others {
            assert!(
                db >= 20.0,
                "participant {i} hears {j}'s tone only {db} dB above the floor: {result:#}"
            );
        }
        // Absent: far under the others. What is left there is the coding noise of two Opus
        // passes over the other tones (and, on a loaded machine, the aiortc client's own
        // glitches), which lies above the median floor.
        if let Some(own) = own.and_then(|i| tones.get(i)) {
            assert!(
                *own <= weakest - 12.0,
                "participant {i} hears its own tone ({own} dB, the others from {weakest}): {result:#}"
            );
        }
    }
    assert!(
        result["deletes"]
            .as_array()
            .is_some_and(|d| d.iter().all(|s| s == 200)),
        "{result:#}"
    );
}
