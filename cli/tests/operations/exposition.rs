//! Checking Prometheus text: with promtool when it is installed, and
//! always with a parser of this test's own.

use std::io::Write;
use std::process::{Command, Stdio};

/// Checks Prometheus text exposition (format 0.0.4) as promtool's parser
/// and linter would, for machines without promtool: every sample belongs
/// to a family declared with HELP and TYPE before it; names and labels are
/// well formed; counters end in `_total`; histograms have cumulative
/// buckets ending in `+Inf` equal to their `_count`, and a `_sum`; no
/// series appears twice. Returns the families and their types.
pub fn check_exposition(text: &str) -> Vec<(String, String)> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families: Vec<(String, String)> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    let mut series = std::collections::BTreeSet::new();
    let mut buckets: std::collections::BTreeMap<String, Vec<(String, f64)>> = Default::default();
    let mut counts: std::collections::BTreeMap<String, f64> = Default::default();
    let mut sums = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            helped.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(
                helped.contains(&name.to_owned()),
                "TYPE before HELP: {line}"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                !families.iter().any(|(n, _)| n == name),
                "family declared twice: {name}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            families.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (key, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match key.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("labels close")),
            None => (key, ""),
        };
        assert!(valid_name(name), "bad name: {line}");
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (label, quoted) = pair.split_once('=').expect("label=value");
            assert!(valid_name(label) && !label.starts_with("__"), "{line}");
            assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
        }
        assert!(series.insert(key.to_owned()), "series twice: {key}");
        let (family, kind) = families.last().expect("a sample before any TYPE");
        match kind.as_str() {
            "histogram" => {
                if name == format!("{family}_bucket") {
                    let le = labels
                        .split(',')
                        .find_map(|p| p.strip_prefix("le="))
                        .expect("bucket has le")
                        .trim_matches('"')
                        .to_owned();
                    buckets.entry(family.clone()).or_default().push((le, value));
                } else if name == format!("{family}_count") {
                    counts.insert(family.clone(), value);
                } else if name == format!("{family}_sum") {
                    sums.insert(family.clone());
                } else {
                    panic!("{name} in histogram {family}");
                }
            }
            _ => assert_eq!(name, family, "sample outside its family"),
        }
        assert!(value >= 0.0, "negative: {line}");
    }
    for (family, kind) in &families {
        if kind != "histogram" {
            continue;
        }
        let b = &buckets[family];
        assert!(
            b.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family}: not cumulative"
        );
        let (le, last) = b.last().unwrap();
        assert_eq!(le, "+Inf", "{family}: last bucket");
        assert_eq!(Some(last), counts.get(family), "{family}: +Inf != count");
        assert!(sums.contains(family), "{family}: no _sum");
    }
    families
}

/// promtool's verdict on `text`, or `None` when promtool is not installed
/// (then this must not be CI, which installs it).
pub fn promtool(text: &str) -> Option<(bool, String)> {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let required = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var("TREXLOCK_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "promtool is required (CI=true or TREXLOCK_REQUIRE_PROMTOOL=1) but not installed: \
                 apt-get install prometheus"
            );
            eprintln!("promtool not installed: checked with this test's own parser only");
            return None;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}
