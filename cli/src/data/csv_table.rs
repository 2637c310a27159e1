//! One CSV file to a [`Table`]: an optional header row, features then a label per row (or the
//! label in a named column), every field a number.

use super::table::{Header, Reading, Table, check_label};

/// Reads `text`; errors start with the line they are about (the caller prefixes the file).
pub fn read(text: &str, reading: &Reading) -> Result<Table, String> {
    let mut rows = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
        .into_records();
    let mut table = Table::empty(reading.labels);
    let Some(first) = rows.next() else {
        return Err("line 1: no rows".into());
    };
    let first = first.map_err(|e| format!("line 1: {e}"))?;
    let (has_header, names) = header_of(&first, reading.header);
    let width = first.len();
    if width < 2 {
        return Err(format!(
            "line 1: {width} column(s): need at least one feature column and a label"
        ));
    }
    let label = label_column(&names, has_header, reading.label_column.as_deref())?;
    let pending = (!has_header).then_some(Ok(first));
    for record in pending.into_iter().chain(rows) {
        let record = record.map_err(|e| format!("{e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != width {
            return Err(format!(
                "line {line}: {} fields, the first row has {width} (ragged rows)",
                record.len()
            ));
        }
        push_row(&mut table, &record, line, label, &names, reading)?;
    }
    table.features = width - 1;
    if table.samples() == 0 {
        return Err("line 1: a header but no rows".into());
    }
    Ok(table)
}

/// Whether `first` is a header row, and the column names (`column I` without a header).
fn header_of(first: &csv::StringRecord, header: Header) -> (bool, Vec<String>) {
    let has_header = match header {
        Header::Yes => true,
        Header::No => false,
        // An empty field is a missing value, not a name: only text that is not a number is.
        Header::Auto => first.iter().any(|f| !f.is_empty() && f.parse::<f64>().is_err()),
    };
    let names = if has_header {
        first.iter().map(str::to_string).collect()
    } else {
        (0..first.len()).map(|i| format!("column {i}")).collect()
    };
    (has_header, names)
}

/// Checks one row and appends it: its features, and its label from column `label`.
fn push_row(
    table: &mut Table,
    record: &csv::StringRecord,
    line: u64,
    label: usize,
    names: &[String],
    reading: &Reading,
) -> Result<(), String> {
    for (column, field) in record.iter().enumerate() {
        let value: f64 = field.parse().map_err(|_| {
            format!(
                "line {line}, column {:?}: {field:?} is not a number",
                names[column]
            )
        })?;
        if column == label {
            check_label(value, reading.labels, &|| format!("line {line}"))?;
            table.push_label(value);
        } else if !value.is_finite() || value.abs() > f64::from(f32::MAX) {
            return Err(format!(
                "line {line}, column {:?}: feature {field} is not a finite f32",
                names[column]
            ));
        } else {
            table.x.push(value as f32);
        }
    }
    Ok(())
}

/// The label column's index: `wanted` as a header name or an index, else the last column.
fn label_column(names: &[String], has_header: bool, wanted: Option<&str>) -> Result<usize, String> {
    let Some(wanted) = wanted else {
        return Ok(names.len() - 1);
    };
    if let Some(i) = names.iter().position(|n| n == wanted).filter(|_| has_header) {
        return Ok(i);
    }
    match wanted.parse::<usize>() {
        Ok(i) if i < names.len() => Ok(i),
        Ok(i) => Err(format!("label column {i} is beyond the {} columns", names.len())),
        Err(_) if has_header => Err(format!(
            "no column named {wanted:?}; the header has {}",
            names.join(", ")
        )),
        Err(_) => Err(format!(
            "label column {wanted:?}: the file has no header to name it"
        )),
    }
}
