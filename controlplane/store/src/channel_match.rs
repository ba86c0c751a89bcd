//! Which channel configuration applies to a channel: an application's patterns in `position`
//! order, the first that matches the channel's name. Pure, so that the gateway can match against
//! its cached snapshot while the database is away.

use super::records::ChannelConfig;

/// The configuration for `channel` of `application`: among that application's configurations
/// whose pattern matches, the one with the lowest position. `configs` may hold other
/// applications' configurations and need not be sorted.
pub fn match_channel<'a>(
    configs: &'a [ChannelConfig],
    application: &str,
    channel: &str,
) -> Option<&'a ChannelConfig> {
    configs
        .iter()
        .filter(|c| c.application_id == application && matches(&c.pattern, channel))
        .min_by_key(|c| c.position)
}

/// Whether `pattern` matches all of `name`; `*` matches any run of characters, empty included,
/// and every other character only itself. Comparing bytes is sound for UTF-8 since `*` is
/// ASCII and never part of another character.
pub fn matches(pattern: &str, name: &str) -> bool {
    wildcard(pattern.as_bytes(), name.as_bytes(), b'*', None)
}

/// Whether `pattern` matches all of `name`, where `star` matches any run of items, empty
/// included, `one` (if any) exactly one item, and every other item only itself. Shared by
/// channel patterns (bytes, `*` only) and SIP mappings (characters, `*` and `?`).
///
/// Greedy with backtracking to the last `star` only: each `star` need only be retried at later
/// starting points, never re-split, so this is O(pattern × name) at worst with no recursion.
pub(crate) fn wildcard<T: Copy + PartialEq>(
    pattern: &[T],
    name: &[T],
    star: T,
    one: Option<T>,
) -> bool {
    let (p, n) = (pattern, name);
    let (mut pi, mut ni) = (0, 0);
    // The position just after the last `star` seen, and where in `name` it began matching.
    let mut last_star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(&c) if c == star => {
                last_star = Some((pi + 1, ni));
                pi += 1;
            }
            Some(&c) if c == n[ni] || Some(c) == one => {
                pi += 1;
                ni += 1;
            }
            _ => match last_star {
                // Let the last `star` swallow one more item and try again from there.
                Some((after, from)) => {
                    pi = after;
                    ni = from + 1;
                    last_star = Some((after, from + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == star)
}

/// Whether `pattern` matches every name: it is made of `*` alone.
pub fn is_catch_all(pattern: &str) -> bool {
    !pattern.is_empty() && pattern.bytes().all(|c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(application: &str, pattern: &str, position: i64) -> ChannelConfig {
        ChannelConfig {
            application_id: application.into(),
            pattern: pattern.into(),
            position,
            allowed_codecs: vec![],
            max_bitrate_kbps: None,
            sfu_allowed: true,
            mcu_allowed: true,
            mcu_layout: None,
            mcu_canvas_width: None,
            mcu_canvas_height: None,
            mcu_frame_rate: None,
            recording: false,
        }
    }

    #[test]
    fn literal_patterns() {
        assert!(matches("room", "room"));
        assert!(!matches("room", "room1"));
        assert!(!matches("room1", "room"));
        assert!(!matches("Room", "room"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn wildcards() {
        let yes = [
            ("*", ""),
            ("*", "anything at all"),
            ("**", "x"),
            ("room-*", "room-"),
            ("room-*", "room-42"),
            ("*-live", "news-live"),
            ("*-live", "-live"),
            ("a*b*c", "abc"),
            ("a*b*c", "aXXbYYc"),
            ("a*b*c", "abcbc"),
            ("a*a", "aa"),
            ("*a*", "banana"),
            ("*ab", "aab"),
            ("a*b", "abab"),
            ("*é*", "café au lait"),
            ("caf*", "café"),
        ];
        for (p, n) in yes {
            assert!(matches(p, n), "{p:?} should match {n:?}");
        }
        let no = [
            ("room-*", "room"),
            ("room-*", "xroom-1"),
            ("*-live", "news-live2"),
            ("a*b*c", "acb"),
            ("a*b*c", "abcd"),
            ("a*a", "a"),
            ("*ab", "aba"),
            ("?", "a"),
        ];
        for (p, n) in no {
            assert!(!matches(p, n), "{p:?} should not match {n:?}");
        }
    }

    #[test]
    fn first_by_position_of_the_right_application() {
        let configs = [
            config("other", "*", 0),
            config("app", "*", 30),
            config("app", "room-*", 20),
            config("app", "room-vip", 10),
        ];
        let pick = |channel| match_channel(&configs, "app", channel).map(|c| c.position);
        assert_eq!(pick("room-vip"), Some(10));
        assert_eq!(pick("room-1"), Some(20));
        assert_eq!(pick("lobby"), Some(30));
        assert_eq!(
            match_channel(&configs, "other", "x").map(|c| c.position),
            Some(0)
        );
        assert!(match_channel(&configs, "nobody", "room-1").is_none());
        assert!(match_channel(&configs[2..], "app", "lobby").is_none());
        assert!(match_channel(&[], "app", "lobby").is_none());
    }

    #[test]
    fn catch_all() {
        assert!(is_catch_all("*"));
        assert!(is_catch_all("***"));
        assert!(!is_catch_all(""));
        assert!(!is_catch_all("a*"));
    }

    /// A slow, obviously right matcher to check the fast one against.
    fn reference(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && reference(rest, &n[1..]),
        }
    }

    /// [`reference`] with `?` matching any one item.
    fn reference_one(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| reference_one(rest, &n[i..])),
            Some((b'?', rest)) => !n.is_empty() && reference_one(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && reference_one(rest, &n[1..]),
        }
    }

    proptest! {
        #[test]
        fn never_panics(p in ".{0,40}", n in ".{0,80}") {
            let _ = matches(&p, &n);
        }

        #[test]
        fn star_matches_everything(n in ".{0,80}", stars in 1usize..4) {
            prop_assert!(matches(&"*".repeat(stars), &n));
        }

        #[test]
        fn a_name_matches_itself_and_its_prefix_star(n in "[^*]{0,40}", cut in 0usize..41) {
            prop_assert!(matches(&n, &n));
            let cut = (0..=cut.min(n.len())).rev().find(|&i| n.is_char_boundary(i)).unwrap_or(0);
            let pattern = format!("{}*", &n[..cut]);
            prop_assert!(matches(&pattern, &n));
        }

        #[test]
        fn agrees_with_the_reference(p in "[ab*]{0,12}", n in "[ab]{0,16}") {
            prop_assert_eq!(matches(&p, &n), reference(p.as_bytes(), n.as_bytes()));
        }

        /// With `?` for one item too, as SIP mappings have it.
        #[test]
        fn one_agrees_with_the_reference(p in "[ab*?]{0,12}", n in "[ab]{0,16}") {
            prop_assert_eq!(
                wildcard(p.as_bytes(), n.as_bytes(), b'*', Some(b'?')),
                reference_one(p.as_bytes(), n.as_bytes())
            );
        }
    }
}
