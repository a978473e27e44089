//! Reading an answer out of generated text, robustly: the first number (or the first
//! stand-alone option label) in the reply, range-checked. A reply that cannot be read is
//! reported with the reason, never silently dropped.

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseFailure {
    NoAnswer,
    OutOfRange,
    UnknownLabel,
}

/// Numbers in the text with their byte positions (integers and decimals, optional sign).
fn numbers(text: &str) -> Vec<(usize, f64)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric())
            {
                i - 1
            } else {
                i
            };
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if let Ok(v) = text[start..j].parse::<f64>() {
                out.push((start, v));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// A number answer in [min, max]. "7/10" or "70%" read as 7 and 70: the first number
/// counts, as a human coder would read it.
pub fn parse_number(reply: &str, min: f64, max: f64) -> Result<f64, ParseFailure> {
    match numbers(reply).first() {
        None => Err(ParseFailure::NoAnswer),
        Some(&(_, v)) if v < min || v > max => Err(ParseFailure::OutOfRange),
        Some(&(_, v)) => Ok(v),
    }
}

/// The display position of the label the reply chose. Digit labels: the first number
/// must equal a label. Letter labels: the first stand-alone capital letter among them
/// ("B", "(B)", "B.", "Answer: B").
pub fn parse_label(reply: &str, labels: &[String]) -> Result<usize, ParseFailure> {
    let digits = labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit()));
    if digits {
        return match numbers(reply).first() {
            None => Err(ParseFailure::NoAnswer),
            Some(&(_, v)) => labels
                .iter()
                .position(|l| l.parse::<f64>().ok() == Some(v))
                .ok_or(ParseFailure::UnknownLabel),
        };
    }
    let chars: Vec<char> = reply.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let before = i == 0 || !chars[i - 1].is_alphanumeric();
        let after = i + 1 >= chars.len() || !chars[i + 1].is_alphanumeric();
        if c.is_ascii_uppercase() && before && after {
            let s = c.to_string();
            if let Some(p) = labels.iter().position(|l| *l == s) {
                return Ok(p);
            }
            // A lone "I" or "A" used as a word is not an answer unless it is a label.
        }
    }
    Err(ParseFailure::NoAnswer)
}

/// "all items in one turn" replies: one answer per line, "n: answer" or "n. answer".
/// Returns the answer text for each of `n_items` statements (None where missing).
pub fn split_numbered(reply: &str, n_items: usize) -> Vec<Option<String>> {
    let mut out = vec![None; n_items];
    for line in reply.lines() {
        let line = line.trim();
        let Some(end) = line.find(|c: char| !c.is_ascii_digit()) else {
            continue;
        };
        if end == 0 {
            continue;
        }
        let Ok(n) = line[..end].parse::<usize>() else {
            continue;
        };
        let rest = line[end..]
            .trim_start_matches(['.', ':', ')', ' ', '-'])
            .trim();
        if (1..=n_items).contains(&n) && out[n - 1].is_none() && !rest.is_empty() {
            out[n - 1] = Some(rest.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_real_looking_replies() {
        let cases: &[(&str, Result<f64, ParseFailure>)] = &[
            ("42", Ok(42.0)),
            ("I would rate my anxiety at 65.", Ok(65.0)),
            ("65/100", Ok(65.0)),
            ("**30**", Ok(30.0)),
            ("About 12.5 out of 100", Ok(12.5)),
            (
                "As an AI, I do not have feelings.",
                Err(ParseFailure::NoAnswer),
            ),
            ("150", Err(ParseFailure::OutOfRange)),
            ("-5", Err(ParseFailure::OutOfRange)),
            ("Rating: 0", Ok(0.0)),
            ("\n\n 100 - extremely", Ok(100.0)),
        ];
        for (reply, want) in cases {
            assert_eq!(&parse_number(reply, 0.0, 100.0), want, "{reply:?}");
        }
    }

    #[test]
    fn labels_from_real_looking_replies() {
        let digits: Vec<String> = ["1", "2", "3", "4"].iter().map(|s| s.to_string()).collect();
        let letters: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_label("3", &digits), Ok(2));
        assert_eq!(parse_label("I'd choose 2 (a little).", &digits), Ok(1));
        assert_eq!(parse_label("5", &digits), Err(ParseFailure::UnknownLabel));
        assert_eq!(
            parse_label("none of them", &digits),
            Err(ParseFailure::NoAnswer)
        );
        assert_eq!(parse_label("B", &letters), Ok(1));
        assert_eq!(parse_label("(C) quite a bit", &letters), Ok(2));
        assert_eq!(parse_label("Answer: D.", &letters), Ok(3));
        assert_eq!(
            parse_label("I feel fine", &letters),
            Err(ParseFailure::NoAnswer)
        );
        assert_eq!(parse_label("Boring", &letters), Err(ParseFailure::NoAnswer));
    }

    #[test]
    fn numbered_lists() {
        let got = split_numbered("1: 3\n2. 2\n\n4) 1\nsome chatter", 4);
        assert_eq!(
            got,
            vec![Some("3".into()), Some("2".into()), None, Some("1".into())]
        );
    }
}
