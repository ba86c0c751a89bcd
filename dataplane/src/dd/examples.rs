//! The scalability structures of the AV1 RTP specification's examples (A.10.2), as test data,
//! and the frame sequences they describe, for the descriptor and layer selection tests.

// ok: this file is compiled for tests only (`#[cfg(test)]` on its `mod` line); every unwrap()/expect() in it is on values the tests built, never on network input

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built

use super::{ChainDiffs, Dtis, Fdiffs, Resolution, Structure, Template};

/// One row of a specification table: spatial id, temporal id, frame differences, chain
/// differences, DTIs (decode target 0 first).
type Row = (u8, u8, &'static [u16], &'static [u8], &'static str);

fn build(offset: u8, rows: &[Row], protected_by: &[u8], resolutions: &[Resolution]) -> Structure {
    let templates: Vec<Template> = rows
        .iter()
        .map(|&(s, t, fdiffs, chains, dtis)| Template {
            spatial_id: s,
            temporal_id: t,
            dtis: Dtis::from_symbols(dtis).unwrap(),
            fdiffs: Fdiffs::new(fdiffs).unwrap(),
            chain_diffs: ChainDiffs::new(chains).unwrap(),
        })
        .collect();
    let targets = rows[0].4.len();
    Structure::new(
        offset,
        targets,
        protected_by
            .iter()
            .map(|&c| usize::from(c) + 1)
            .max()
            .unwrap_or(0),
        protected_by,
        &templates,
        resolutions,
    )
    .unwrap()
}

/// A.10.2.1 L1T3; decode targets 30, 15, 7.5 fps (temporal 2, 1, 0), one chain of the T0
/// frames.
pub fn l1t3(offset: u8) -> Structure {
    build(
        offset,
        &[
            (0, 0, &[], &[0], "SSS"),
            (0, 0, &[4], &[4], "SSS"),
            (0, 1, &[2], &[2], "SD-"),
            (0, 2, &[1], &[1], "D--"),
            (0, 2, &[1], &[3], "D--"),
        ],
        &[0, 0, 0],
        &[],
    )
}

/// L1T3 frames in order, as template indices: the keyframe, then T2 T1 T2 T0 forever.
pub fn l1t3_templates(frames: usize) -> Vec<usize> {
    let cycle = [3, 2, 4, 1];
    (0..frames)
        .map(|i| if i == 0 { 0 } else { cycle[(i - 1) % 4] })
        .collect()
}

/// A.10.2.2 L3T3 full SVC; decode targets HD30 HD15 HD7.5 VGA30 VGA15 VGA7.5 QVGA30 QVGA15
/// QVGA7.5 (so decode target 0 is the highest).
pub fn l3t3_full(offset: u8) -> Structure {
    build(
        offset,
        &[
            (0, 0, &[], &[0, 0, 0], "SSSSSSSSS"),
            (0, 0, &[12], &[12, 11, 10], "RRRRRRSSS"),
            (0, 1, &[6], &[6, 5, 4], "RR-RR-SD-"),
            (0, 2, &[3], &[3, 2, 1], "R--R--D--"),
            (0, 2, &[3], &[9, 8, 7], "R--R--D--"),
            (1, 0, &[1], &[1, 1, 1], "SSSSSS---"),
            (1, 0, &[12, 1], &[1, 1, 1], "RRRSSS---"),
            (1, 1, &[6, 1], &[7, 6, 5], "RR-SD----"),
            (1, 2, &[3, 1], &[4, 3, 2], "R--D-----"),
            (1, 2, &[3, 1], &[10, 9, 8], "R--D-----"),
            (2, 0, &[1], &[2, 1, 1], "SSS------"),
            (2, 0, &[12, 1], &[2, 1, 1], "SSS------"),
            (2, 1, &[6, 1], &[8, 7, 6], "SD-------"),
            (2, 2, &[3, 1], &[5, 4, 3], "D--------"),
            (2, 2, &[3, 1], &[11, 10, 9], "D--------"),
        ],
        &[2, 2, 2, 1, 1, 1, 0, 0, 0],
        &[
            Resolution {
                width: 320,
                height: 180,
            },
            Resolution {
                width: 640,
                height: 360,
            },
            Resolution {
                width: 1280,
                height: 720,
            },
        ],
    )
}

/// L3T3 full SVC frames in order (three per temporal unit, S0 S1 S2): the keyframe, then
/// temporal units T2 T1 T2 T0 forever.
pub fn l3t3_full_templates(units: usize) -> Vec<usize> {
    let cycle: [[usize; 3]; 4] = [[3, 8, 13], [2, 7, 12], [4, 9, 14], [1, 6, 11]];
    (0..units)
        .flat_map(|u| {
            if u == 0 {
                [0, 5, 10]
            } else {
                cycle[(u - 1) % 4]
            }
        })
        .collect()
}

/// A.10.2.3 L3T3 k-SVC with temporal shift; decode targets as in [`l3t3_full`]. Above the
/// keyframe, each spatial layer refers only to itself.
pub fn l3t3_key_shift(offset: u8) -> Structure {
    build(
        offset,
        &[
            (0, 0, &[], &[0, 0, 0], "SSSSSSSSS"),
            (0, 0, &[3], &[3, 2, 1], "------SSS"),
            (0, 0, &[12], &[12, 8, 1], "------SSS"),
            (0, 1, &[6], &[6, 2, 7], "------SD-"),
            (0, 2, &[3], &[3, 5, 4], "------D--"),
            (0, 2, &[3], &[9, 5, 10], "------D--"),
            (0, 2, &[3], &[3, 11, 4], "------D--"),
            (1, 0, &[1], &[1, 1, 1], "SSSSSS---"),
            (1, 0, &[6], &[4, 6, 5], "---SSS---"),
            (1, 0, &[12], &[4, 12, 5], "---SSS---"),
            (1, 1, &[6], &[10, 6, 11], "---SD----"),
            (1, 2, &[3], &[1, 3, 2], "---D-----"),
            (1, 2, &[3], &[7, 3, 8], "---D-----"),
            (1, 2, &[3], &[1, 9, 2], "---D-----"),
            (2, 0, &[1], &[2, 1, 1], "SSS------"),
            (2, 0, &[12], &[11, 7, 12], "SSS------"),
            (2, 1, &[6], &[5, 1, 6], "SD-------"),
            (2, 2, &[3], &[2, 4, 3], "D--------"),
            (2, 2, &[3], &[8, 4, 9], "D--------"),
            (2, 2, &[3], &[2, 10, 3], "D--------"),
        ],
        &[2, 2, 2, 1, 1, 1, 0, 0, 0],
        &[],
    )
}

/// L3T3 k-SVC frames in order (S0 S1 S2 per temporal unit): worked out from the table's frame
/// and chain differences; the spatial layers' temporal patterns are shifted by one unit each.
pub fn l3t3_key_shift_templates(units: usize) -> Vec<usize> {
    let start: [[usize; 3]; 5] = [
        [0, 7, 14],
        [1, 11, 17],
        [4, 8, 16],
        [3, 12, 18],
        [5, 10, 15],
    ];
    let cycle: [[usize; 3]; 4] = [[2, 13, 19], [6, 9, 16], [3, 12, 18], [5, 10, 15]];
    (0..units)
        .flat_map(|u| if u < 5 { start[u] } else { cycle[(u - 5) % 4] })
        .collect()
}
