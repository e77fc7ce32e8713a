//! One table of text cells from an uploaded file: CSV (RFC 4180 quoting, UTF-8 with or
//! without BOM, or GB18030 as Chinese Excel saves "CSV") or the first worksheet of an
//! XLSX workbook (read with `calamine`). Row 1 is the header; row and column numbers in
//! errors are the file's own, 1-based, as the spreadsheet shows them.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};

/// The file formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values.
    Csv,
    /// Office Open XML workbook (first worksheet).
    Xlsx,
}

impl Format {
    /// The format of a content type or file name (`text/csv`, `x.xlsx`), if known.
    pub fn guess(content_type_or_name: &str) -> Option<Format> {
        let s = content_type_or_name.to_ascii_lowercase();
        if s.contains("spreadsheetml") || s.ends_with(".xlsx") {
            Some(Format::Xlsx)
        } else if s.contains("csv") || s.ends_with(".csv") || s.starts_with("text/plain") {
            Some(Format::Csv)
        } else {
            None
        }
    }
}

/// Why a file could not be read as a table.
#[derive(Debug, thiserror::Error)]
pub enum SheetError {
    /// Not a readable XLSX workbook.
    #[error("not a readable xlsx workbook: {0}")]
    Xlsx(String),
    /// The workbook has no worksheet.
    #[error("the workbook has no worksheet")]
    NoSheet,
    /// A quoted CSV field that never ends.
    #[error("row {row}: a quoted field is not closed")]
    Unclosed {
        /// The row it starts on.
        row: usize,
    },
    /// Nothing but blank lines.
    #[error("the file is empty: row 1 must name the columns")]
    Empty,
}

/// Cells by row; `rows[0]` is the header (row 1 of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sheet {
    /// Trimmed cell text, row by row.
    pub rows: Vec<Vec<String>>,
}

impl Sheet {
    /// Reads `bytes` in `format`.
    ///
    /// # Errors
    /// [`SheetError`].
    pub fn read(bytes: &[u8], format: Format) -> Result<Sheet, SheetError> {
        let rows = match format {
            Format::Csv => csv_rows(&decode(bytes))?,
            Format::Xlsx => xlsx_rows(bytes)?,
        };
        if rows.iter().all(|r| r.iter().all(String::is_empty)) {
            return Err(SheetError::Empty);
        }
        Ok(Sheet { rows })
    }
}

/// UTF-8 (a BOM dropped), else GB18030, which Excel on a Chinese Windows writes.
fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::GB18030.decode(bytes).0.into_owned(),
    }
}

/// RFC 4180: fields split by commas, `"` quotes a field, `""` inside is one quote;
/// CRLF or LF ends a row.
fn csv_rows(text: &str) -> Result<Vec<Vec<String>>, SheetError> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut row_start) = (false, 1);
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                line += usize::from(c == '\n');
                field.push(c);
            }
            (false, '"') if field.trim().is_empty() => {
                quoted = true;
                field.clear();
            }
            (false, ',') => row.push(std::mem::take(&mut field).trim().to_owned()),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field).trim().to_owned());
                rows.push(std::mem::take(&mut row));
                line += 1;
                row_start = line;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(SheetError::Unclosed { row: row_start });
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field.trim().to_owned());
        rows.push(row);
    }
    Ok(rows)
}

/// The first worksheet, padded so that `rows[0]` is the sheet's row 1 and column A is
/// index 0 even when the used range starts further in.
fn xlsx_rows(bytes: &[u8]) -> Result<Vec<Vec<String>>, SheetError> {
    let mut book: Xlsx<_> =
        Xlsx::new(Cursor::new(bytes)).map_err(|e| SheetError::Xlsx(e.to_string()))?;
    let range = book
        .worksheet_range_at(0)
        .ok_or(SheetError::NoSheet)?
        .map_err(|e| SheetError::Xlsx(e.to_string()))?;
    let (top, left) = range.start().unwrap_or((0, 0));
    let mut rows: Vec<Vec<String>> = vec![Vec::new(); top as usize];
    for r in range.rows() {
        let mut cells = vec![String::new(); left as usize];
        cells.extend(r.iter().map(cell_text));
        rows.push(cells);
    }
    Ok(rows)
}

fn cell_text(d: &Data) -> String {
    match d {
        // Addresses typed as numbers come back as floats (10 -> 10.0): keep them integral.
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Empty => String::new(),
        other => other.to_string().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn csv_quotes_commas_newlines_and_a_bom_are_read_as_excel_writes_them() {
        let text = "\u{feff}a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\r\n2,\"two\nlines\",\r\n";
        let s = Sheet::read(text.as_bytes(), Format::Csv).unwrap();
        assert_eq!(
            s.rows,
            vec![
                vec!["a", "b", "c"],
                vec!["1", "x, y", "say \"hi\""],
                vec!["2", "two\nlines", ""],
            ]
        );
    }

    #[test]
    fn gb18030_csv_from_chinese_excel_is_decoded() {
        let (bytes, _, _) = encoding_rs::GB18030.encode("楼栋,楼层\nA,1\n");
        let s = Sheet::read(&bytes, Format::Csv).unwrap();
        assert_eq!(s.rows[0], vec!["楼栋", "楼层"]);
    }

    #[test]
    fn an_unclosed_quote_names_its_row() {
        let e = Sheet::read(b"a\n\"open\n", Format::Csv).unwrap_err();
        assert!(matches!(e, SheetError::Unclosed { row: 2 }), "{e}");
    }

    #[test]
    fn garbage_is_not_an_xlsx_workbook() {
        assert!(matches!(
            Sheet::read(b"PK not really", Format::Xlsx),
            Err(SheetError::Xlsx(_))
        ));
    }
}
