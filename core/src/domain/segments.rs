//! How many segments an SMS costs, as carriers count them (3GPP TS 23.038 and 23.040).
//!
//! A text made only of the GSM 03.38 alphabet travels as 7-bit septets: 160 fit in one
//! segment, and a longer text is split into segments of 153 (the rest carries the header that
//! joins them). The extension table's characters (`€ [ ] { } \ ^ ~ |` and form feed) take two
//! septets, an escape and the character, and a pair is never split across segments. Any other
//! character makes the whole text UCS-2: 70 UTF-16 code units in one segment, 67 per segment
//! when split, a surrogate pair (an emoji) never split either.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The GSM 03.38 default alphabet, every character of it but the escape.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The extension table: each is sent as an escape and the character, two septets.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The septets `c` takes in GSM-7, or `None` when it is not in the alphabet. Plain ASCII
/// letters, digits and punctuation are answered without a search.
fn septets(c: char) -> Option<usize> {
    match c {
        'A'..='Z' | 'a'..='z' | '0'..='9' | ' ' | '\n' | '\r' => Some(1),
        '!' | '"' | '#' | '$' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.'
        | '/' => Some(1),
        ':' | ';' | '<' | '=' | '>' | '?' | '@' | '_' => Some(1),
        c if c.is_ascii() && GSM7_EXTENSION.contains(c) => Some(2),
        '€' => Some(2),
        c if !c.is_ascii() && GSM7_BASIC.contains(c) => Some(1),
        _ => None,
    }
}

/// How an SMS's text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SmsEncoding {
    #[serde(rename = "GSM-7")]
    Gsm7,
    #[serde(rename = "UCS-2")]
    Ucs2,
}

impl SmsEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "GSM-7",
            SmsEncoding::Ucs2 => "UCS-2",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [SmsEncoding::Gsm7, SmsEncoding::Ucs2]
            .into_iter()
            .find(|e| e.as_str() == raw)
    }

    /// What one segment holds alone, and what each holds when the text is split.
    fn capacity(self) -> (usize, usize) {
        match self {
            SmsEncoding::Gsm7 => (160, 153),
            SmsEncoding::Ucs2 => (70, 67),
        }
    }

    /// The room `c` takes in this encoding: septets for GSM-7, UTF-16 code units for UCS-2.
    fn width(self, c: char) -> usize {
        match self {
            SmsEncoding::Gsm7 => septets(c).unwrap_or(2),
            SmsEncoding::Ucs2 => c.len_utf16(),
        }
    }
}

impl fmt::Display for SmsEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SMS text's encoding and the segments it is sent (and billed) as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: SmsEncoding,
    pub count: u16,
}

impl Segments {
    /// Measures `text` as a carrier would. An empty text is one (empty) segment.
    pub fn of(text: &str) -> Self {
        let gsm7 = text.chars().all(|c| septets(c).is_some());
        let encoding = if gsm7 {
            SmsEncoding::Gsm7
        } else {
            SmsEncoding::Ucs2
        };
        let (single, part) = encoding.capacity();
        let total: usize = text.chars().map(|c| encoding.width(c)).sum();
        if total <= single {
            return Self { encoding, count: 1 };
        }
        // Fill each part without splitting a character that takes two units.
        let (mut count, mut used) = (1usize, 0usize);
        for c in text.chars() {
            let w = encoding.width(c);
            if used + w > part {
                count += 1;
                used = 0;
            }
            used += w;
        }
        Self {
            encoding,
            count: u16::try_from(count).unwrap_or(u16::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(text: &str) -> (SmsEncoding, u16) {
        let s = Segments::of(text);
        (s.encoding, s.count)
    }

    #[test]
    fn the_gsm_alphabet_has_its_127_characters_and_the_escape_table_its_10() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
    }

    #[test]
    fn the_fast_path_agrees_with_the_alphabet_for_every_character_it_could_meet() {
        for code in 0..=0x2FFFFu32 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let want = if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(septets(c), want, "{c:?} (U+{code:04X})");
        }
    }

    #[test]
    fn gsm7_fits_160_in_one_segment_and_153_in_each_of_several() {
        assert_eq!(measure(""), (SmsEncoding::Gsm7, 1));
        assert_eq!(measure(&"a".repeat(160)), (SmsEncoding::Gsm7, 1));
        assert_eq!(measure(&"a".repeat(161)), (SmsEncoding::Gsm7, 2));
        assert_eq!(measure(&"a".repeat(306)), (SmsEncoding::Gsm7, 2));
        assert_eq!(measure(&"a".repeat(307)), (SmsEncoding::Gsm7, 3));
        assert_eq!(measure(&"é@£¥Ü§¿ΔΩ\n".repeat(16)), (SmsEncoding::Gsm7, 1));
    }

    #[test]
    fn extension_characters_take_two_septets_and_are_never_split() {
        assert_eq!(measure(&"€".repeat(80)), (SmsEncoding::Gsm7, 1));
        assert_eq!(measure(&"€".repeat(81)), (SmsEncoding::Gsm7, 2));
        assert_eq!(
            measure(&format!("{}{{", "a".repeat(158))),
            (SmsEncoding::Gsm7, 1)
        );
        assert_eq!(
            measure(&format!("{}{{", "a".repeat(159))),
            (SmsEncoding::Gsm7, 2)
        );
        // 152 septets, then a two-septet `[`: it opens the second part rather than straddle.
        let straddling = format!("{}[{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(measure(&straddling), (SmsEncoding::Gsm7, 3));
        let fitting = format!("{}[{}", "a".repeat(151), "a".repeat(151));
        assert_eq!(measure(&fitting), (SmsEncoding::Gsm7, 2));
    }

    #[test]
    fn any_character_outside_the_alphabet_makes_it_ucs2_70_or_67() {
        assert_eq!(measure("Grüße, ça va? `"), (SmsEncoding::Ucs2, 1));
        assert_eq!(measure(&"ж".repeat(70)), (SmsEncoding::Ucs2, 1));
        assert_eq!(measure(&"ж".repeat(71)), (SmsEncoding::Ucs2, 2));
        assert_eq!(measure(&"ж".repeat(134)), (SmsEncoding::Ucs2, 2));
        assert_eq!(measure(&"ж".repeat(135)), (SmsEncoding::Ucs2, 3));
        // One accented capital outside the alphabet turns 160 septets into three segments.
        assert_eq!(
            measure(&format!("Á{}", "a".repeat(159))),
            (SmsEncoding::Ucs2, 3)
        );
    }

    #[test]
    fn an_emoji_is_two_code_units_and_never_split() {
        assert_eq!(measure(&"😀".repeat(35)), (SmsEncoding::Ucs2, 1));
        assert_eq!(measure(&"😀".repeat(36)), (SmsEncoding::Ucs2, 2));
        // 66 units, then a pair that would straddle the 67-unit boundary.
        let straddling = format!("{}😀{}", "ж".repeat(66), "ж".repeat(66));
        assert_eq!(measure(&straddling), (SmsEncoding::Ucs2, 3));
    }

    #[test]
    fn encodings_read_and_print_as_the_contract_spells_them() {
        for e in [SmsEncoding::Gsm7, SmsEncoding::Ucs2] {
            assert_eq!(SmsEncoding::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        assert_eq!(SmsEncoding::parse("gsm7"), None);
    }
}
