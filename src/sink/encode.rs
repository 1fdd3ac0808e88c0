//! Turns a batch into the bytes of one lake object.

use std::borrow::Cow;
use std::sync::Arc;

use polars::prelude::*;
use polars_arrow::datatypes::ArrowDataType;
use polars_arrow::datatypes::Metadata;
use polars_parquet::write::{
    schema_to_metadata_key, CompressionOptions, Encoding, FileWriter, RowGroupIterator,
    StatisticsOptions, Version, WriteOptions,
};

use super::batch::{Batch, Values, KAFKA_COLUMNS};
use crate::error::{Error, Result};
use crate::lake::{Fields, Format};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The object body for `batch` in `format` (NDJSON: the batch's own lines, not a copy).
/// Parquet rows are sorted by the `order` columns the batch has (the symbol, then the event
/// time: row groups then have narrow statistics to skip by, and a symbol's values sit
/// together, which compresses better); columns carry the table's field ids and types, if it
/// has `fields`.
pub fn encode<'b>(
    batch: &'b Batch,
    format: Format,
    fields: &Fields,
    order: &[&str],
) -> Result<Cow<'b, [u8]>> {
    match format {
        Format::Ndjson => Ok(Cow::Borrowed(&batch.lines)),
        Format::Parquet => parquet_with_ids(&sorted(frame(batch)?, order)?, fields).map(Cow::Owned),
    }
}

/// `frame` sorted by those of `order` it has; rows that tie keep their Kafka order.
fn sorted(frame: DataFrame, order: &[&str]) -> Result<DataFrame> {
    let by: Vec<PlSmallStr> = (order.iter())
        .filter(|name| frame.schema().contains(name))
        .map(|name| PlSmallStr::from(*name))
        .collect();
    if by.is_empty() || frame.height() < 2 {
        return Ok(frame);
    }
    let options = SortMultipleOptions::default()
        .with_maintain_order(true)
        .with_multithreaded(false);
    frame.sort(by, options).map_err(encode_error)
}

/// The batch's rows as a frame, with the columns and types its Parquet object would have.
pub fn frame(batch: &Batch) -> Result<DataFrame> {
    let mut columns: Vec<Column> = batch.columns.iter().map(column).collect();
    if let Some(meta) = &batch.meta {
        columns.push(
            Int32Chunked::full(KAFKA_COLUMNS[0].into(), meta.partition, batch.rows).into_column(),
        );
        columns.push(
            Int64Chunked::from_vec(KAFKA_COLUMNS[1].into(), meta.offsets.clone()).into_column(),
        );
        columns.push(
            Int64Chunked::from_iter_options(
                KAFKA_COLUMNS[2].into(),
                meta.timestamps.iter().map(|t| t.map(|ms| ms * 1000)),
            )
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column(),
        );
    }
    DataFrame::new(batch.rows, columns).map_err(encode_error)
}

fn column(col: &super::batch::Column) -> Column {
    let name: PlSmallStr = col.name.as_str().into();
    let valid = &col.valid;
    let opt = |i: usize| valid[i];
    match &col.values {
        // A column that only ever held nulls is stored as strings: every engine accepts that.
        Values::Null => Column::full_null(name, valid.len(), &DataType::String),
        Values::Bool(v) => BooleanChunked::from_iter_options(
            name,
            v.iter().enumerate().map(|(i, &b)| opt(i).then_some(b)),
        )
        .into_column(),
        Values::Int(v) => Int64Chunked::from_iter_options(
            name,
            v.iter().enumerate().map(|(i, &x)| opt(i).then_some(x)),
        )
        .into_column(),
        Values::Float(v) => Float64Chunked::from_iter_options(
            name,
            v.iter().enumerate().map(|(i, &x)| opt(i).then_some(x)),
        )
        .into_column(),
        Values::Str { text, ends } => {
            let strings = ends.iter().enumerate().map(|(i, &end)| {
                let start = if i == 0 { 0 } else { ends[i - 1] };
                opt(i).then(|| &text[start..end])
            });
            StringChunked::from_iter_options(name, strings).into_column()
        }
        Values::Time {
            micros,
            date_only: true,
        } => Int32Chunked::from_iter_values(
            name,
            micros.iter().map(|&m| m.div_euclid(MICROS_PER_DAY) as i32),
        )
        .into_date()
        .into_column(),
        Values::Time {
            micros,
            date_only: false,
        } => Int64Chunked::from_vec(name, micros.clone())
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column(),
    }
}

/// Rows per row group: readers read row groups in parallel and skip them by their
/// statistics (DuckDB writes 122,880; Polars 262,144).
const ROW_GROUP_ROWS: usize = 131_072;

/// Zstd Parquet with column statistics, in row groups of [`ROW_GROUP_ROWS`], with types
/// every engine reads (strings, int64, float64, booleans, dates, timestamps in
/// microseconds), whose columns carry the field ids of an Iceberg table
/// (`PARQUET:field_id`), which readers such as Polars' and Spark's use to find a column
/// whatever it is called now, and have the table's types (integers in a double column are
/// written as doubles, dates in a timestamp column as midnight). Columns the table does
/// not have yet have no id.
pub fn parquet_with_ids(frame: &DataFrame, fields: &Fields) -> Result<Vec<u8>> {
    let casts: Vec<Expr> = (frame.schema().iter())
        .filter_map(|(name, dtype)| {
            let wanted = fields.dtype(name).filter(|w| *w != dtype)?;
            Some(col(name.clone()).cast(wanted.clone()))
        })
        .collect();
    let cast;
    let frame = match casts.is_empty() {
        true => frame,
        false => {
            cast = (frame.clone().lazy().with_columns(casts).collect())
                .map_err(|e| Error::schema(format!("cannot write the table's types: {e}")))?;
            &cast
        }
    };
    let with_ids = |level: CompatLevel| {
        let mut schema = frame.schema().to_arrow(level);
        for (name, field) in schema.iter_mut() {
            if let Some(id) = fields.id(name.as_str()) {
                let key = PlSmallStr::from_static("PARQUET:field_id");
                field.metadata = Some(Arc::new(Metadata::from([(key, id.to_string().into())])));
            }
        }
        schema
    };
    let schema = with_ids(CompatLevel::newest());
    // The Arrow schema embedded for readers says Arrow's classic types (the Parquet data is
    // the same): readers that merge files by it (pyiceberg) refuse to merge string views
    // with the large strings of the null columns of files that lack a column.
    let classic = schema_to_metadata_key(&with_ids(CompatLevel::oldest()));
    let options = WriteOptions {
        statistics: StatisticsOptions::default(),
        version: Version::V1,
        compression: CompressionOptions::Zstd(None),
        data_page_size: None,
    };
    // Doubles are written plain: deciding on a dictionary estimates each column chunk's
    // cardinality with a 16k-register sketch, which cost the sink 14% of its time on small
    // objects, and prices are rarely worth a dictionary (zstd takes the repeats).
    let encodings = (polars::io::parquet::write::get_encodings(&schema).iter())
        .zip(schema.iter_values())
        .map(|(encoding, field)| match field.dtype() {
            ArrowDataType::Float64 | ArrowDataType::Float32 => vec![Encoding::Plain],
            _ => encoding.clone(),
        })
        .collect();
    let mut writer =
        FileWriter::try_new(Vec::new(), schema.clone(), options).map_err(encode_error)?;
    let batches = (0..frame.height().max(1))
        .step_by(ROW_GROUP_ROWS)
        .flat_map(|start| {
            (frame.slice(start as i64, ROW_GROUP_ROWS))
                .iter_chunks(CompatLevel::newest(), false)
                .collect::<Vec<_>>()
        })
        .map(Ok);
    let groups =
        RowGroupIterator::try_new(batches, &schema, options, encodings).map_err(encode_error)?;
    for group in groups {
        // The row count is read from the encoded columns.
        writer
            .write(u64::MAX, group.map_err(encode_error)?)
            .map_err(encode_error)?;
    }
    writer.end(Some(vec![classic])).map_err(encode_error)?;
    Ok(writer.into_inner())
}

fn encode_error(e: PolarsError) -> Error {
    Error::io(format!("cannot encode Parquet: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::record::EventTime;
    use crate::record::Record;
    use crate::sink::SinkConfig;

    #[test]
    fn parquet_round_trips_with_engine_friendly_types() {
        let config = SinkConfig::new("t", "g");
        let mut batch = Batch::new(5, true, Some(2));
        let rows = [
            r#"{"Index":"NYA","Date":"2021-01-04","Open":1,"n":7,"ok":true}"#,
            r#"{"Index":"GDAXI","Date":"2021-01-05","Open":2.5,"n":null,"ok":false}"#,
        ];
        for (i, raw) in rows.iter().enumerate() {
            let record = Record::parse(raw.as_bytes()).unwrap();
            let day = 18_631 + i as i64;
            let time = EventTime {
                field: 1,
                micros: day * MICROS_PER_DAY,
                date_only: true,
            };
            batch
                .push(
                    &record,
                    raw.as_bytes(),
                    &config,
                    time,
                    5 + i as i64,
                    Some(1000),
                )
                .unwrap();
        }
        let bytes = encode(&batch, Format::Parquet, &Fields::default(), &[]).unwrap();
        let df = ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .unwrap();
        let types: Vec<_> = df.dtypes().into_iter().map(|t| t.to_string()).collect();
        assert_eq!(
            types,
            [
                "str",
                "date",
                "f64",
                "i64",
                "bool",
                "i32",
                "i64",
                "datetime[μs]"
            ]
        );
        assert_eq!(df.column("Open").unwrap().f64().unwrap().get(1), Some(2.5));
        assert_eq!(df.column("n").unwrap().null_count(), 1);
        assert_eq!(
            df.column("_kafka_offset").unwrap().i64().unwrap().get(1),
            Some(6)
        );
    }

    #[test]
    fn columns_carry_the_field_ids_they_are_given() {
        let frame =
            df!("symbol" => ["NYA", "IXIC"], "Close" => [1.5, 2.5], "note" => ["a", "b"]).unwrap();
        let fields = Fields(HashMap::from([
            ("symbol".to_string(), (1, DataType::String)),
            ("Close".to_string(), (7, DataType::Float64)),
        ]));
        let bytes = parquet_with_ids(&frame, &fields).unwrap();
        let metadata =
            polars_parquet::read::read_metadata(&mut std::io::Cursor::new(&bytes)).unwrap();
        let found: Vec<(String, Option<i32>)> = (metadata.schema().fields().iter())
            .map(|f| (f.name().to_string(), f.get_field_info().id))
            .collect();
        assert_eq!(
            found,
            [
                ("symbol".into(), Some(1)),
                ("Close".into(), Some(7)),
                ("note".into(), None)
            ]
        );
        let back = ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .unwrap();
        assert!(back.equals(&frame));
    }
}
