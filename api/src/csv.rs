//! A small RFC 4180 reader for contact imports: commas between fields, fields in double
//! quotes may hold commas, line breaks and doubled quotes (`""`), records end with CRLF or
//! LF, and a UTF-8 byte-order mark before the header is skipped. Blank lines are skipped.

/// Where the text stops being CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    /// 1-based line of the text.
    pub line: usize,
    pub message: &'static str,
}

/// The records of `text`, each a list of fields.
pub fn records(text: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    // Whether the current field began with a quote, and whether we are inside the quotes.
    let mut quoted = false;
    let mut in_quotes = false;
    let end_record =
        |record: &mut Vec<String>, field: &mut String, quoted: bool, records: &mut Vec<_>| {
            record.push(std::mem::take(field));
            let done = std::mem::take(record);
            // A blank line is one empty, unquoted field.
            if quoted || !(done.len() == 1 && done[0].is_empty()) {
                records.push(done);
            }
        };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    if !matches!(chars.peek(), None | Some(',' | '\r' | '\n')) {
                        return Err(CsvError {
                            line,
                            message: "a closing quote must end its field: write a quote inside a quoted field as two quotes",
                        });
                    }
                }
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                quoted = true;
                in_quotes = true;
            }
            '"' => {
                return Err(CsvError {
                    line,
                    message: "a quote inside a field that does not begin with one: quote the whole field and double the quote",
                });
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                end_record(&mut record, &mut field, quoted, &mut records);
                quoted = false;
                line += 1;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(CsvError {
            line,
            message: "a quoted field is not closed before the end of the text",
        });
    }
    if !record.is_empty() || !field.is_empty() || quoted {
        end_record(&mut record, &mut field, quoted, &mut records);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Vec<String>> {
        records(text).unwrap()
    }

    #[test]
    fn plain_records_with_either_line_ending() {
        assert_eq!(
            rows("phone,name\r\n+15550001,Ann\n+15550002,Bob"),
            vec![
                vec!["phone", "name"],
                vec!["+15550001", "Ann"],
                vec!["+15550002", "Bob"]
            ]
        );
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        assert_eq!(
            rows("name,note\r\n\"Smith, Ann\",\"said \"\"hi\"\"\r\nthen left\"\r\n"),
            vec![
                vec!["name", "note"],
                vec!["Smith, Ann", "said \"hi\"\r\nthen left"]
            ]
        );
    }

    #[test]
    fn a_bom_and_blank_lines_are_skipped_and_empty_fields_kept() {
        assert_eq!(
            rows("\u{feff}phone,email\n\n+15550001,\n,\"\"\n"),
            vec![vec!["phone", "email"], vec!["+15550001", ""], vec!["", ""]]
        );
        assert_eq!(rows("\"\""), vec![vec![""]]);
    }

    #[test]
    fn broken_quoting_is_refused_with_its_line() {
        assert_eq!(records("a\n\"open").unwrap_err().line, 2);
        assert_eq!(records("a\n\"x\"y,z").unwrap_err().line, 2);
        assert_eq!(records("a\nx\"y").unwrap_err().line, 2);
    }
}
