//! Plain-text output for people: aligned tables and `name  value` blocks. Pure functions from
//! the API's JSON to text, so what a command prints is decided in one place and tested here.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Which side of its column a cell sits on: numbers read best right-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row; columns are as wide as their widest cell.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l.get(c).map_or(0, |cell| cell.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (c, (width, (_, align))) in widths.iter().zip(&self.columns).enumerate() {
                let cell = line.get(c).map_or("", String::as_str);
                let pad = " ".repeat(width - cell.chars().count());
                if c > 0 {
                    text.push_str("  ");
                }
                match align {
                    Align::Left => {
                        text.push_str(cell);
                        text.push_str(&pad);
                    }
                    Align::Right => {
                        text.push_str(&pad);
                        text.push_str(cell);
                    }
                }
            }
            // Padding after the last column is invisible and gets in the way of `grep 'x$'`.
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `name  value` lines with the values aligned, for one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(name, value)| format!("{name:width$}  {value}\n"))
        .collect()
}

/// A JSON value as a person reads it: strings bare, `null` as `-`, anything else as compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time from the API shortened to whole seconds in UTC, so table columns stay narrow and
/// line up; anything that is not a time is shown as [`text`] shows it.
pub fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| text(value))
}

/// `text` cut to at most `max` characters, ending with `…` when cut, on one line.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_table_aligns_its_columns_and_right_aligns_numbers() {
        let mut t = Table::new(&[("NAME", Align::Left), ("PENDING", Align::Right)]);
        t.row(vec!["deliveries".into(), "3".into()]);
        t.row(vec!["replies".into(), "120".into()]);
        assert_eq!(
            t.render(),
            "NAME        PENDING\ndeliveries        3\nreplies         120\n"
        );
    }

    #[test]
    fn the_last_column_is_not_padded() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["x".into(), "long value".into()]);
        assert_eq!(t.render(), "A  B\nx  long value\n");
    }

    #[test]
    fn times_are_shown_to_the_second_in_utc() {
        assert_eq!(
            time(&json!("2026-03-01T10:15:30.123456+02:00")),
            "2026-03-01T08:15:30Z"
        );
        assert_eq!(time(&Value::Null), "-");
    }

    #[test]
    fn truncation_keeps_one_line_and_cuts_on_characters() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a\nb", 10), "a b");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }
}
