//! `{name}` placeholders in a query, bound to values as SQL literals: a value is never SQL
//! text, so a string with quotes in it stays one string. Placeholders inside string
//! literals, quoted identifiers and comments are left as they are.

use crate::error::{Error, Result};

/// A value to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Param {
    fn literal(&self, name: &str) -> Result<String> {
        Ok(match self {
            Param::Null => "NULL".into(),
            Param::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            Param::Int(i) => i.to_string(),
            Param::Float(f) if f.is_finite() => format!("{f:?}"),
            Param::Float(f) => {
                return Err(Error::query(format!(
                    "parameter {{{name}}} is {f}, which SQL has no literal for"
                )))
            }
            Param::Text(s) => format!("'{}'", s.replace('\'', "''")),
        })
    }
}

/// `query` with each `{name}` outside literals and comments replaced by the literal of
/// `lookup(name)`; `lookup` returning `None` is an error naming the placeholder.
pub fn bind(query: &str, lookup: &mut dyn FnMut(&str) -> Result<Option<Param>>) -> Result<String> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(c) = rest.chars().next() {
        let skip = match c {
            '\'' | '"' | '`' => quoted_len(rest, c),
            '-' if rest.starts_with("--") => rest.find('\n').unwrap_or(rest.len()),
            '/' if rest.starts_with("/*") => rest.find("*/").map_or(rest.len(), |i| i + 2),
            '{' => match placeholder(rest) {
                Some((name, len)) => {
                    let value = lookup(name)?.ok_or_else(|| {
                        Error::query(format!(
                            "no value for {{{name}}}: define a variable {name} (or pass it in \
                             params)"
                        ))
                    })?;
                    out.push_str(&value.literal(name)?);
                    rest = &rest[len..];
                    continue;
                }
                None => 1,
            },
            _ => c.len_utf8(),
        };
        out.push_str(&rest[..skip]);
        rest = &rest[skip..];
    }
    Ok(out)
}

/// The length of a literal or identifier quoted by `quote` at the start of `text` (a
/// doubled quote is part of it); to the end if it is not closed.
fn quoted_len(text: &str, quote: char) -> usize {
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|&(_, next)| next == quote) {
                chars.next();
            } else {
                return i + 1;
            }
        }
    }
    text.len()
}

/// `{name}` at the start of `text`, with `name` an identifier: the name and the length.
fn placeholder(text: &str) -> Option<(&str, usize)> {
    let end = text.find('}')?;
    let name = &text[1..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_alphabetic() || first == '_') && chars.all(|c| c.is_alphanumeric() || c == '_'))
        .then_some((name, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<'a>(values: &'a [(&'a str, Param)]) -> impl FnMut(&str) -> Result<Option<Param>> + 'a {
        move |name| {
            Ok(values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone()))
        }
    }

    #[test]
    fn binds_values_as_literals_and_leaves_quoted_text_alone() {
        let values = [
            ("sym", Param::Text("O'Neil".into())),
            ("n", Param::Int(5)),
            ("x", Param::Float(1.5)),
            ("on", Param::Bool(true)),
            ("none", Param::Null),
        ];
        let sql = bind(
            "SELECT '{sym}', \"{n}\" FROM t -- {x}\nWHERE s = {sym} AND n > {n} AND x < {x} \
             AND b = {on} AND c IS {none} /* {n} */",
            &mut with(&values),
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT '{sym}', \"{n}\" FROM t -- {x}\nWHERE s = 'O''Neil' AND n > 5 AND x < 1.5 \
             AND b = TRUE AND c IS NULL /* {n} */"
        );
    }

    #[test]
    fn a_missing_value_or_a_non_finite_number_is_an_error() {
        let err = bind("SELECT {missing}", &mut with(&[])).unwrap_err();
        assert!(err.to_string().contains("no value for {missing}"), "{err}");
        let nan = [("x", Param::Float(f64::NAN))];
        assert!(bind("SELECT {x}", &mut with(&nan)).is_err());
        // Braces that are not placeholders stay.
        assert_eq!(
            bind("SELECT {1}, {", &mut with(&[])).unwrap(),
            "SELECT {1}, {"
        );
    }
}
