//! The one CSV writer for every table affectbench writes (the report's tables,
//! `trials.csv`, the probe rows): a row is a `#[derive(Serialize)]` struct whose field
//! names are the header, so a column's name and its value are written in one place.
//! A number that may be missing is a `Num`, written as Rust's shortest decimal or `NA`,
//! which pandas and R both read as missing.

use crate::error::{Error, Result};
use serde::{Serialize, Serializer};
use std::path::Path;

/// A number in a CSV cell: `NA` when not finite (missing, undefined), else the
/// shortest decimal that reads back to the same f64.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Num(pub f64);

impl Num {
    /// `NA` for `None`.
    pub fn or_na(x: Option<f64>) -> Num {
        Num(x.unwrap_or(f64::NAN))
    }
}

/// The cell text of a number: see `Num`.
pub fn cell(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "NA".into()
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&cell(self.0))
    }
}

fn io_error(path: &Path, e: impl Into<std::io::Error>) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Writes `rows` to `path`, the header from the first row's field names. With no rows
/// the file is written empty; use `write_table` where the columns must be named even
/// then.
pub fn write_rows<R: Serialize>(path: &Path, rows: impl IntoIterator<Item = R>) -> Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| io_error(path, e))?;
    for r in rows {
        w.serialize(r).map_err(|e| io_error(path, e))?;
    }
    w.flush().map_err(|e| io_error(path, e))
}

/// Writes `rows` to `path` like `write_rows`, but a table with no rows still gets its
/// header (taken from `blank`, any row of the type), so a reader finds its columns.
pub fn write_table<R: Serialize>(
    path: &Path,
    rows: impl IntoIterator<Item = R>,
    blank: R,
) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_some() {
        return write_rows(path, rows);
    }
    // csv writes a header only together with a record: serialise the blank row to
    // memory and keep its first line (header names never hold a line break).
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(blank).map_err(|e| io_error(path, e))?;
    let bytes = w.into_inner().map_err(|e| io_error(path, e.into_error()))?;
    let header_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    std::fs::write(path, &bytes[..header_end]).map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Row {
        name: String,
        value: Num,
        n: usize,
    }

    fn written(rows: Vec<Row>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        write_table(&path, rows, Row::default()).unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_missing_number_is_written_na_and_a_present_one_in_shortest_form() {
        let text = written(vec![
            Row {
                name: "a, b".into(),
                value: Num(0.1),
                n: 3,
            },
            Row {
                name: "c".into(),
                value: Num(f64::NAN),
                n: 0,
            },
            Row {
                name: "d".into(),
                value: Num::or_na(None),
                n: 1,
            },
            Row {
                name: "e".into(),
                value: Num(1e-7),
                n: 2,
            },
        ]);
        assert_eq!(
            text,
            "name,value,n\n\"a, b\",0.1,3\nc,NA,0\nd,NA,1\ne,0.0000001,2\n"
        );
    }

    #[test]
    fn an_empty_table_still_names_its_columns() {
        assert_eq!(written(vec![]), "name,value,n\n");
    }
}
