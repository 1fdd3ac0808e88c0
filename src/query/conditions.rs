//! The conditions a query puts on one table's columns, for skipping files whose column
//! bounds rule them out before any is opened. Only what is certain is taken: the
//! `AND`-ed comparisons of a column with a literal in the `WHERE` of a query that reads
//! the table once, from that `SELECT` alone. Anything else gives no conditions, and every
//! file is read (the engine filters the rows either way).

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, ObjectName, SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// How a column compares with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Op {
    /// The same comparison with its sides swapped (`5 < x` is `x > 5`).
    fn flipped(self) -> Op {
        match self {
            Op::Eq => Op::Eq,
            Op::Lt => Op::Gt,
            Op::LtEq => Op::GtEq,
            Op::Gt => Op::Lt,
            Op::GtEq => Op::LtEq,
        }
    }
}

/// A literal as written: a number or a string (typed strings such as `DATE '…'` too).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(String),
    Text(String),
}

/// `column op value`, which every row the query keeps satisfies.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    pub value: Literal,
}

/// The conditions `query` puts on every row it reads from `table` (none if unsure).
pub fn conditions(query: &str, table: &str) -> Vec<Condition> {
    let Ok(statements) = Parser::parse_sql(&GenericDialect, query) else {
        return Vec::new();
    };
    let mut references = References::default();
    let _ = statements.visit(&mut references);
    if references.0.get(table) != Some(&1) || statements.len() != 1 {
        return Vec::new();
    }
    let Statement::Query(query) = &statements[0] else {
        return Vec::new();
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Vec::new();
    };
    let ([from], Some(selection)) = (select.from.as_slice(), &select.selection) else {
        return Vec::new();
    };
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return Vec::new();
    };
    if !from.joins.is_empty() || last(name) != table {
        return Vec::new();
    }
    let alias = alias.as_ref().map(|a| a.name.value.as_str());
    let mut found = Vec::new();
    conjuncts(selection, &[Some(table), alias], &mut found);
    found
}

/// How often each table name is read in a statement.
#[derive(Default)]
struct References(HashMap<String, usize>);

impl Visitor for References {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        *self.0.entry(last(relation)).or_default() += 1;
        ControlFlow::Continue(())
    }
}

fn last(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(|ident| ident.value.clone())
        .unwrap_or_default()
}

/// The comparisons `AND`-ed together in `expr`, of columns of the table (unqualified, or
/// qualified by one of `names`).
fn conjuncts(expr: &Expr, names: &[Option<&str>], found: &mut Vec<Condition>) {
    let column = |e: &Expr| match e {
        Expr::Identifier(ident) => Some(ident.value.clone()),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [qualifier, ident] if names.contains(&Some(qualifier.value.as_str())) => {
                Some(ident.value.clone())
            }
            _ => None,
        },
        _ => None,
    };
    match expr {
        Expr::Nested(inner) => conjuncts(inner, names, found),
        Expr::BinaryOp { left, op, right } => {
            if *op == BinaryOperator::And {
                conjuncts(left, names, found);
                conjuncts(right, names, found);
                return;
            }
            let Some(op) = comparison(op) else {
                return;
            };
            match (column(left), literal(right), column(right), literal(left)) {
                (Some(column), Some(value), _, _) => found.push(Condition { column, op, value }),
                (_, _, Some(column), Some(value)) => found.push(Condition {
                    column,
                    op: op.flipped(),
                    value,
                }),
                _ => {}
            }
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => {
            if let (Some(column), Some(low), Some(high)) =
                (column(expr), literal(low), literal(high))
            {
                found.push(Condition {
                    column: column.clone(),
                    op: Op::GtEq,
                    value: low,
                });
                found.push(Condition {
                    column,
                    op: Op::LtEq,
                    value: high,
                });
            }
        }
        _ => {}
    }
}

fn comparison(op: &BinaryOperator) -> Option<Op> {
    Some(match op {
        BinaryOperator::Eq => Op::Eq,
        BinaryOperator::Lt => Op::Lt,
        BinaryOperator::LtEq => Op::LtEq,
        BinaryOperator::Gt => Op::Gt,
        BinaryOperator::GtEq => Op::GtEq,
        _ => return None,
    })
}

fn literal(expr: &Expr) -> Option<Literal> {
    let value = match expr {
        Expr::Value(v) => &v.value,
        Expr::TypedString(typed) => &typed.value.value,
        Expr::Nested(inner) => return literal(inner),
        _ => return None,
    };
    match value {
        Value::Number(n, _) => Some(Literal::Number(n.to_string())),
        Value::SingleQuotedString(s) => Some(Literal::Text(s.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(column: &str, op: Op, value: Literal) -> Condition {
        Condition {
            column: column.into(),
            op,
            value,
        }
    }

    fn text(s: &str) -> Literal {
        Literal::Text(s.into())
    }

    #[test]
    fn and_ed_comparisons_of_the_one_table_read_are_taken_either_side_round() {
        let query = "SELECT Index, avg(Close) FROM ticks t WHERE (t.Date >= '2021-01-04' \
                     AND 100 < Close) AND Index = 'NYA' AND Volume BETWEEN 1 AND 9 GROUP BY 1";
        assert_eq!(
            conditions(query, "ticks"),
            [
                c("Date", Op::GtEq, text("2021-01-04")),
                c("Close", Op::Gt, Literal::Number("100".into())),
                c("Index", Op::Eq, text("NYA")),
                c("Volume", Op::GtEq, Literal::Number("1".into())),
                c("Volume", Op::LtEq, Literal::Number("9".into())),
            ]
        );
        assert_eq!(
            conditions(
                "SELECT * FROM ticks WHERE Date = DATE '2021-01-04'",
                "ticks"
            ),
            [c("Date", Op::Eq, text("2021-01-04"))]
        );
    }

    #[test]
    fn nothing_is_taken_where_some_row_could_escape_it() {
        for query in [
            // An OR, a NOT BETWEEN, a function of the column.
            "SELECT * FROM ticks WHERE Date = '2021-01-04' OR Close > 5",
            "SELECT * FROM ticks WHERE Close NOT BETWEEN 1 AND 2",
            "SELECT * FROM ticks WHERE year(Date) = 2021",
            // The table read twice, joined, or under a subquery.
            "SELECT * FROM ticks WHERE Close > 5 UNION ALL SELECT * FROM ticks",
            "SELECT * FROM ticks a JOIN fx b ON a.c = b.c WHERE a.Close > 5",
            "SELECT * FROM (SELECT * FROM ticks) s WHERE Close > 5",
            // Another table's column.
            "SELECT * FROM ticks WHERE other.Close > 5",
            "not SQL",
        ] {
            assert!(conditions(query, "ticks").is_empty(), "{query}");
        }
    }
}
