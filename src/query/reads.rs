//! What a lake query may read: its tables, nothing else. Polars SQL's table functions
//! (`read_csv('/any/path')`, `read_parquet('s3://…')`) would read any file or URL the
//! process can reach, which a query over a lake has no business doing.

use std::ops::ControlFlow;

use sqlparser::ast::{TableFactor, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// Fails with a `Query` error if `query` reads anything but named tables (and subqueries,
/// joins and unnests of them). Unparsable SQL passes: the engine reports it.
pub fn only_tables(query: &str) -> Result<()> {
    let Ok(statements) = Parser::parse_sql(&GenericDialect, query) else {
        return Ok(());
    };
    let mut check = OnlyTables;
    match statements.visit(&mut check) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(what) => Err(Error::query(format!(
            "SQL error: {what} reads outside the lake; a lake query reads only its tables \
             (see Lake.tables())"
        ))),
    }
}

struct OnlyTables;

impl Visitor for OnlyTables {
    type Break = String;

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { name, args, .. } => match args {
                Some(_) => ControlFlow::Break(format!("the table function {name}(…)")),
                None => ControlFlow::Continue(()),
            },
            TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. }
            | TableFactor::Pivot { .. }
            | TableFactor::Unpivot { .. } => ControlFlow::Continue(()),
            other => {
                let text = other.to_string();
                let head: String = text.chars().take(40).collect();
                ControlFlow::Break(format!("{head:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_functions_are_refused_wherever_they_hide() {
        for query in [
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM ticks JOIN READ_PARQUET('s3://other/x.parquet') p ON true",
            "SELECT * FROM (SELECT * FROM read_json('/x')) t",
            "SELECT (SELECT count(*) FROM read_ipc('/x')) AS n FROM ticks",
            "WITH t AS (SELECT * FROM read_csv('/x')) SELECT * FROM t",
            "SELECT 1 UNION ALL SELECT * FROM read_csv('/x')",
        ] {
            let err = only_tables(query).unwrap_err().to_string();
            assert!(err.contains("reads outside the lake"), "{query}: {err}");
        }
    }

    #[test]
    fn named_tables_subqueries_and_strings_that_mention_functions_pass() {
        for query in [
            "SELECT * FROM ticks",
            "SELECT a.x FROM ticks a JOIN (SELECT * FROM bars) b ON a.x = b.x",
            "SELECT 'read_csv(''/etc/passwd'')' AS text FROM \"read_csv\"",
            "WITH t AS (SELECT * FROM ticks) SELECT count(*) FROM t",
            "SELEC nonsense",
        ] {
            assert!(only_tables(query).is_ok(), "{query}");
        }
    }
}
