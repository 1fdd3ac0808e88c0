//! The price an analytics job reads: one field of a tick, or arithmetic over its fields and
//! the fields an as-of join adds (`Close * rate`), so that a derived price drives windows,
//! indicators and alerts like a field would.

use std::fmt;

use crate::error::{Error, Result};

/// A price as written: a field name, or `+ - * /` over fields, numbers and parentheses.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Field(String),
    Number(f64),
    Negate(Box<Expr>),
    Binary(Box<Expr>, Op, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
}

impl Expr {
    /// Text without an operator is a field name as written (`"Adj Close"`, `close-usd`);
    /// text with `+ * / ( )`, a quote or a ` - ` is an expression, in which a name holding
    /// spaces or operators is quoted (`"Adj Close" * rate`).
    pub fn parse(text: &str) -> Result<Self> {
        let is_expression = text.contains(['+', '*', '/', '(', ')', '"']) || text.contains(" - ");
        if !is_expression {
            return match text.trim() {
                "" => Err(Error::config("the price field is empty")),
                name => Ok(Expr::Field(name.to_string())),
            };
        }
        let tokens = tokens(text).map_err(|why| bad(text, &why))?;
        let mut parser = Parser { tokens, at: 0 };
        let expr = parser.sum().map_err(|why| bad(text, &why))?;
        match parser.tokens.get(parser.at) {
            None => Ok(expr),
            Some(t) => Err(bad(text, &format!("unexpected {t}"))),
        }
    }

    /// The fields it reads, in order of appearance.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Expr::Field(name) => vec![name.as_str()],
            Expr::Number(_) => Vec::new(),
            Expr::Negate(e) => e.fields(),
            Expr::Binary(a, _, b) => [a.fields(), b.fields()].concat(),
        }
    }

    /// Its value, given each field's; a result that is not a finite number is an error.
    pub fn eval(
        &self,
        field: &dyn Fn(&str) -> std::result::Result<f64, String>,
    ) -> std::result::Result<f64, String> {
        let value = self.value(field)?;
        match value.is_finite() {
            true => Ok(value),
            false => Err(format!("{self} is {value}")),
        }
    }

    fn value(
        &self,
        field: &dyn Fn(&str) -> std::result::Result<f64, String>,
    ) -> std::result::Result<f64, String> {
        Ok(match self {
            Expr::Field(name) => field(name)?,
            Expr::Number(v) => *v,
            Expr::Negate(e) => -e.value(field)?,
            Expr::Binary(a, op, b) => {
                let (a, b) = (a.value(field)?, b.value(field)?);
                match op {
                    Op::Add => a + b,
                    Op::Subtract => a - b,
                    Op::Multiply => a * b,
                    Op::Divide => a / b,
                }
            }
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Field(name) => write!(f, "{name:?}"),
            Expr::Number(v) => write!(f, "{v}"),
            Expr::Negate(e) => write!(f, "-{e}"),
            Expr::Binary(a, op, b) => {
                let op = match op {
                    Op::Add => '+',
                    Op::Subtract => '-',
                    Op::Multiply => '*',
                    Op::Divide => '/',
                };
                write!(f, "({a} {op} {b})")
            }
        }
    }
}

fn bad(text: &str, why: &str) -> Error {
    Error::config(format!(
        "price {text:?}: {why}; write a field name or arithmetic such as \"Close * rate\" \
         (quote names with spaces: '\"Adj Close\" * rate')"
    ))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Number(f64),
    Symbol(char),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Name(n) => write!(f, "name {n:?}"),
            Token::Number(v) => write!(f, "number {v}"),
            Token::Symbol(c) => write!(f, "{c:?}"),
        }
    }
}

fn tokens(text: &str) -> std::result::Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '+' | '-' | '*' | '/' | '(' | ')' => out.push(Token::Symbol(c)),
            '"' => {
                let rest = &text[i + 1..];
                let end = rest.find('"').ok_or("a quote is not closed")?;
                out.push(Token::Name(rest[..end].to_string()));
                for _ in 0..rest[..=end].chars().count() {
                    chars.next();
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !(d.is_ascii_digit() || d == '.') {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                let number = &text[i..end];
                out.push(Token::Number(
                    number
                        .parse()
                        .map_err(|_| format!("{number:?} is no number"))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !(d.is_alphanumeric() || d == '_' || d == '.') {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                out.push(Token::Name(text[i..end].to_string()));
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(out)
}

/// Recursive descent: sums of products of factors.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next_symbol(&mut self, wanted: &[char]) -> Option<char> {
        match self.tokens.get(self.at) {
            Some(Token::Symbol(c)) if wanted.contains(c) => {
                self.at += 1;
                Some(*c)
            }
            _ => None,
        }
    }

    fn sum(&mut self) -> std::result::Result<Expr, String> {
        let mut left = self.product()?;
        while let Some(c) = self.next_symbol(&['+', '-']) {
            let op = if c == '+' { Op::Add } else { Op::Subtract };
            left = Expr::Binary(Box::new(left), op, Box::new(self.product()?));
        }
        Ok(left)
    }

    fn product(&mut self) -> std::result::Result<Expr, String> {
        let mut left = self.factor()?;
        while let Some(c) = self.next_symbol(&['*', '/']) {
            let op = if c == '*' { Op::Multiply } else { Op::Divide };
            left = Expr::Binary(Box::new(left), op, Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> std::result::Result<Expr, String> {
        if self.next_symbol(&['-']).is_some() {
            return Ok(Expr::Negate(Box::new(self.factor()?)));
        }
        if self.next_symbol(&['(']).is_some() {
            let inner = self.sum()?;
            return match self.next_symbol(&[')']) {
                Some(_) => Ok(inner),
                None => Err("a parenthesis is not closed".into()),
            };
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Name(n)) => Ok(Expr::Field(n)),
            Some(Token::Number(v)) => Ok(Expr::Number(v)),
            Some(t) => Err(format!("unexpected {t}")),
            None => Err("it ends too soon".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> std::result::Result<f64, String> {
        let fields = |name: &str| match name {
            "Close" => Ok(10.0),
            "rate" => Ok(0.5),
            "Adj Close" => Ok(4.0),
            "zero" => Ok(0.0),
            other => Err(format!("missing field {other:?}")),
        };
        Expr::parse(text).unwrap().eval(&fields)
    }

    #[test]
    fn a_name_without_operators_is_a_field_as_written() {
        assert_eq!(
            Expr::parse("Adj Close").unwrap(),
            Expr::Field("Adj Close".into())
        );
        assert_eq!(
            Expr::parse("close-usd").unwrap(),
            Expr::Field("close-usd".into())
        );
        assert!(Expr::parse(" ").is_err());
    }

    #[test]
    fn arithmetic_follows_precedence_and_parentheses() {
        assert_eq!(value("Close * rate"), Ok(5.0));
        assert_eq!(value("Close + 2 * rate"), Ok(11.0));
        assert_eq!(value("(Close + 2) * rate"), Ok(6.0));
        assert_eq!(value("Close - 4 - 2"), Ok(4.0));
        assert_eq!(value("-Close / 4"), Ok(-2.5));
        assert_eq!(value("\"Adj Close\" * rate"), Ok(2.0));
        assert_eq!(
            Expr::parse("\"Adj Close\" * rate").unwrap().fields(),
            ["Adj Close", "rate"]
        );
    }

    #[test]
    fn what_cannot_be_parsed_or_computed_is_said() {
        for (text, why) in [
            ("Close * ", "ends too soon"),
            ("(Close * rate", "not closed"),
            ("Close * rate)", "unexpected ')'"),
            ("\"Close * rate", "quote is not closed"),
            ("Close * 1.2.3", "no number"),
            ("Close * rate %", "unexpected '%'"),
        ] {
            let e = Expr::parse(text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("Close * rate"), "{text}: {e}");
        }
        assert_eq!(value("Close * fx"), Err("missing field \"fx\"".into()));
        let e = value("Close / zero").unwrap_err();
        assert!(e.contains("inf"), "{e}");
    }
}
