//! Property tests: parsing never panics on arbitrary or damaged input, and generated valid
//! configurations come back with exactly the values written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_config::model::{Action, Source};
use proptest::prelude::*;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The text of every example configuration.
fn example_texts() -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Parses and, on error, also renders the errors (Display must not panic either).
fn parse_and_render(text: &str) {
    match berth_config::parse(text, &examples_dir()) {
        Ok(c) => {
            let _ = c.summary();
        }
        Err(e) => {
            assert!(!e.0.is_empty());
            let _ = e.to_string();
        }
    }
    if let Err(e) = berth_config::parse_targets_file(text) {
        let _ = e.to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        parse_and_render(&text);
    }

    #[test]
    fn toml_like_strings_never_panic(
        text in r#"(\[\[?[a-z_.]{0,20}\]\]?\n|[a-z_.\[\]0-9]{0,20} = ("[^"\n]{0,12}"|[0-9-]{1,6}|true|\[\]|\{\}|\{ [a-z]{1,6} = [0-9]{1,3} \})\n){0,12}"#
    ) {
        parse_and_render(&text);
    }

    #[test]
    fn truncated_examples_never_panic(which in 0usize..16, cut in 0.0f64..1.0) {
        let texts = example_texts();
        let text = &texts[which % texts.len()];
        let bytes = text.as_bytes();
        let n = ((bytes.len() as f64) * cut) as usize;
        parse_and_render(&String::from_utf8_lossy(&bytes[..n]));
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..16,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..8),
        deletes in proptest::collection::vec((0.0f64..1.0, 1usize..40), 0..3),
    ) {
        let texts = example_texts();
        let mut bytes = texts[which % texts.len()].as_bytes().to_vec();
        for (at, byte) in flips {
            let i = ((bytes.len() as f64) * at) as usize;
            if i < bytes.len() {
                bytes[i] = byte;
            }
        }
        for (at, len) in deletes {
            let i = ((bytes.len() as f64) * at) as usize;
            let end = (i + len).min(bytes.len());
            bytes.drain(i..end);
        }
        parse_and_render(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn generated_configs_round_trip(groups in proptest::collection::vec(group_strategy(), 1..6)) {
        let text = render(&groups);
        let config = match berth_config::parse(&text, Path::new("/srv/berth")) {
            Ok(c) => c,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n---\n{text}"))),
        };
        prop_assert_eq!(config.target_groups.len(), groups.len());
        for (i, (g, t)) in groups.iter().zip(&config.target_groups).enumerate() {
            prop_assert_eq!(&t.name, &format!("tg{i}"));
            let h = &t.health_check;
            prop_assert_eq!(h.interval, Duration::from_secs(g.interval_s));
            prop_assert_eq!(h.timeout, Duration::from_millis(g.timeout_ms));
            prop_assert_eq!(h.healthy_threshold, g.healthy);
            prop_assert_eq!(h.unhealthy_threshold, g.unhealthy);
            prop_assert!(h.matcher.matches(g.matcher_lo) && h.matcher.matches(g.matcher_hi));
            prop_assert_eq!(t.deregistration_delay, Duration::from_secs(g.dereg_s));
            prop_assert_eq!(t.slow_start, Duration::from_secs(g.slow_start_s));
            prop_assert_eq!(t.timeouts.connect, Duration::from_millis(g.connect_ms));
            prop_assert_eq!(t.retry.attempts, g.attempts);
            match &t.source {
                Source::Static(targets) => {
                    prop_assert_eq!(targets.len(), g.weights.len());
                    for (j, (spec, w)) in targets.iter().zip(&g.weights).enumerate() {
                        prop_assert_eq!(spec.address, format!("127.0.{i}.{}:8080", j + 1).parse().unwrap());
                        prop_assert_eq!(spec.weight, *w);
                    }
                }
                other => prop_assert!(false, "unexpected source {:?}", other),
            }
        }
        let listener = &config.listeners[0];
        match &listener.default_action {
            Action::Forward(w) => {
                prop_assert_eq!(w.len(), groups.len().min(5));
                for (i, wg) in w.iter().enumerate() {
                    prop_assert_eq!(&wg.target_group, &format!("tg{i}"));
                    prop_assert_eq!(wg.weight, groups[i].forward_weight);
                }
            }
            other => prop_assert!(false, "unexpected action {:?}", other),
        }
    }
}

/// Inputs of one generated target group.
#[derive(Debug, Clone)]
struct Group {
    interval_s: u64,
    timeout_ms: u64,
    healthy: u32,
    unhealthy: u32,
    matcher_lo: u16,
    matcher_hi: u16,
    dereg_s: u64,
    slow_start_s: u64,
    connect_ms: u64,
    attempts: u32,
    weights: Vec<u32>,
    forward_weight: u32,
}

prop_compose! {
    /// A target group's inputs, each within the range the configuration accepts.
    fn group_strategy()(
        (interval_s, timeout_ms) in (1u64..=300).prop_flat_map(|i| (Just(i), 100u64..i * 1000)),
        (healthy, unhealthy) in (2u32..=10, 2u32..=10),
        (matcher_lo, matcher_hi) in (100u16..=599).prop_flat_map(|lo| (Just(lo), lo..=599)),
        dereg_s in 0u64..=3600,
        slow_start_s in prop_oneof![Just(0u64), 30u64..=900],
        connect_ms in 1u64..=60_000,
        attempts in 0u32..=10,
        weights in proptest::collection::vec(1u32..=1000, 1..5),
        forward_weight in 1u32..=999,
    ) -> Group {
        Group {
            interval_s,
            timeout_ms,
            healthy,
            unhealthy,
            matcher_lo,
            matcher_hi,
            dereg_s,
            slow_start_s,
            connect_ms,
            attempts,
            weights,
            forward_weight,
        }
    }
}

/// A configuration with one listener forwarding to (up to five of) the groups.
fn render(groups: &[Group]) -> String {
    let forward: Vec<String> = groups
        .iter()
        .enumerate()
        .take(5)
        .map(|(i, g)| {
            format!(
                "{{ target_group = \"tg{i}\", weight = {} }}",
                g.forward_weight
            )
        })
        .collect();
    let mut text = format!(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\ndefault_action = {{ forward = [{}] }}\n",
        forward.join(", ")
    );
    for (i, g) in groups.iter().enumerate() {
        let targets: Vec<String> = g
            .weights
            .iter()
            .enumerate()
            .map(|(j, w)| format!("{{ address = \"127.0.{i}.{}:8080\", weight = {w} }}", j + 1))
            .collect();
        text.push_str(&format!(
            "\n[[target_groups]]\nname = \"tg{i}\"\nderegistration_delay = \"{}s\"\nslow_start = \"{}s\"\n\
             timeouts = {{ connect = \"{}ms\" }}\nretry = {{ attempts = {} }}\n\
             [target_groups.health_check]\ninterval = \"{}s\"\ntimeout = \"{}ms\"\n\
             healthy_threshold = {}\nunhealthy_threshold = {}\nmatcher = \"{}-{}\"\n\
             [target_groups.source]\nkind = \"static\"\ntargets = [{}]\n",
            g.dereg_s,
            g.slow_start_s,
            g.connect_ms,
            g.attempts,
            g.interval_s,
            g.timeout_ms,
            g.healthy,
            g.unhealthy,
            g.matcher_lo,
            g.matcher_hi,
            targets.join(", ")
        ));
    }
    text
}
