//! The monitoring that ships with Herald: the Prometheus alert rules and their unit tests
//! (run by promtool), the compose Prometheus configuration, the Grafana board, and the links
//! between them: every alert has a runbook section, every panel a query, and every metric they
//! name is one Herald exports.

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const ALERTS: &str = "docker/prometheus/alerts.yml";
const ALERT_TESTS: &str = "docker/prometheus/alerts_test.yml";
const PROMETHEUS: &str = "docker/prometheus/prometheus.yml";
const BOARD: &str = "docker/grafana/herald.json";
const RUNBOOK: &str = "docs/RUNBOOK.md";
const RUNBOOK_URL: &str = "https://github.com/herald/herald/blob/main/docs/RUNBOOK.md#";
/// Where Herald's metrics are registered.
const SOURCES: [&str; 4] = ["core/src", "api/src", "worker/src", "scheduler/src"];

/// The workspace root: this crate is `tests/` in it.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool from the repository root and returns what it printed; fails the test with
/// that output when promtool says no, and says how to get promtool when it is missing.
fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed: scripts/test installs it (Debian's `prometheus` \
             package: apt-get install --no-install-recommends prometheus)"
        ),
        Err(e) => panic!("promtool could not be started: {e}"),
    };
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`promtool {}` failed ({}):\n{printed}",
        args.join(" "),
        out.status
    );
    printed
}

/// An operator loading alerts.yml into Prometheus gets no parse error and no lint complaint.
#[test]
fn the_alert_rules_pass_promtool_check() {
    promtool(&["check", "rules", ALERTS]);
}

/// Each alert fires on the series that should wake someone and stays quiet otherwise (below
/// its threshold, not yet for long enough, no traffic), as alerts_test.yml spells out.
#[test]
fn the_alert_unit_tests_pass() {
    promtool(&["test", "rules", ALERT_TESTS]);
}

/// `docker compose up` starts a Prometheus whose configuration (scrape targets, rule files)
/// it accepts.
#[test]
fn the_compose_prometheus_configuration_is_valid() {
    promtool(&["check", "config", PROMETHEUS]);
}

/// The alerts in alerts.yml: (name, runbook_url if any), in file order. A line scan, since
/// the file is ours and its shape is fixed: `- alert: Name` starts a rule.
fn alert_rules() -> Vec<(String, Option<String>)> {
    let mut rules: Vec<(String, Option<String>)> = Vec::new();
    for line in read(ALERTS).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            rules.push((name.trim().to_owned(), None));
        } else if line.starts_with("- record:") {
            panic!("{ALERTS} should hold alerts only, found {line:?}");
        } else if let Some(url) = line.strip_prefix("runbook_url:") {
            let (name, slot) = rules
                .last_mut()
                .unwrap_or_else(|| panic!("a runbook_url before any alert: {line:?}"));
            assert!(slot.is_none(), "{name} has two runbook_urls");
            *slot = Some(url.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    rules
}

/// GitHub's anchor for a heading: lowercase, spaces to '-', punctuation dropped except '-'
/// and '_'.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The anchors of every heading of a Markdown text (outside code blocks).
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            anchors.insert(github_anchor(line[hashes..].trim_end_matches('#')));
        }
    }
    anchors
}

/// An on-call engineer who follows an alert's runbook link lands on that alert's section.
#[test]
fn every_alert_links_to_a_runbook_section() {
    let rules = alert_rules();
    assert!(
        rules.len() >= 10,
        "expected Herald's alerts in {ALERTS}, found {rules:?}"
    );
    let anchors = heading_anchors(&read(RUNBOOK));
    let mut problems = Vec::new();
    for (name, url) in &rules {
        let Some(url) = url else {
            problems.push(format!("{name} has no runbook_url"));
            continue;
        };
        let Some(anchor) = url.strip_prefix(RUNBOOK_URL) else {
            problems.push(format!("{name}: {url} does not start with {RUNBOOK_URL}"));
            continue;
        };
        if !anchors.contains(anchor) {
            problems.push(format!("{name}: #{anchor} is no heading of {RUNBOOK}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n(headings: {anchors:?})",
        problems.join("\n")
    );
}

/// Every panel of the board, rows included, also those inside collapsed rows.
fn panels(board: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in board["panels"].as_array().expect("the board has panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// Someone opening the Herald board in Grafana sees a chart in every panel, each asking the
/// Prometheus data source picked in the board's variable.
#[test]
fn every_panel_of_the_grafana_board_has_a_query() {
    let board: Value = serde_json::from_str(&read(BOARD))
        .unwrap_or_else(|e| panic!("{BOARD} is not valid JSON: {e}"));
    assert_eq!(board["uid"], "herald");
    assert_eq!(board["schemaVersion"], 39);
    let variables = board["templating"]["list"].as_array().expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .unwrap_or_else(|| panic!("{BOARD} has no Prometheus data source variable"));
    let uid = format!("${{{}}}", datasource["name"].as_str().expect("a name"));

    let mut problems = Vec::new();
    let mut charts = 0;
    for panel in panels(&board) {
        if panel["type"] == "row" {
            continue;
        }
        charts += 1;
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["datasource"]["uid"] != uid.as_str() {
            problems.push(format!("{title:?} does not use the {uid} data source"));
        }
        let queries = panel["targets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .filter(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()))
                    .count()
            })
            .unwrap_or(0);
        if queries == 0 {
            problems.push(format!("{title:?} has no target with an expr"));
        }
    }
    assert!(
        charts >= 15,
        "expected the whole board, found {charts} panels"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `herald_*` metric names a text mentions, histogram series (`_bucket`, `_sum`,
/// `_count`) as their histogram.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for (at, _) in text.match_indices("herald_") {
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let end = text[at..]
            .bytes()
            .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .map_or(text.len(), |n| at + n);
        let name = &text[at..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(name.to_owned());
    }
    names
}

/// Every `.rs` file under `dir`, read.
fn rust_sources(dir: &Path, into: &mut String) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
            into.push('\n');
        }
    }
}

/// An alert or a panel never waits on a metric no Herald process exports (a typo, or a metric
/// renamed in the code): every `herald_*` name in alerts.yml and the board is a string literal
/// in Herald's sources.
#[test]
fn every_metric_the_alerts_and_the_board_use_is_exported() {
    let mut code = String::new();
    for dir in SOURCES {
        rust_sources(&repo_root().join(dir), &mut code);
    }
    let mut used = metric_names(&read(ALERTS));
    used.extend(metric_names(&read(BOARD)));
    assert!(
        used.len() >= 20,
        "expected Herald's metrics, found {used:?}"
    );
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !code.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "named in {ALERTS} or {BOARD} but not a string literal under {}: {missing:?}",
        SOURCES.join(", ")
    );
}
