//! Records: one Kafka message's JSON object decoded into its fields, and (`time`) the
//! event time of a field, as the sink, analytics, the topic reader and the live tail read
//! them.
//!
//! Decoding builds no JSON tree and makes no heap allocation per message: keys and strings
//! borrow from the message whenever they contain no escapes, and the list of fields
//! reuses the storage of the previous record.

mod schema;
pub mod time;

pub use schema::TickSchema;

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use time::{epoch_micros, TimeFormat};

/// One JSON value, as far as a lake column is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array or object: not storable in a flat column.
    Nested,
}

impl Scalar<'_> {
    /// What kind of value this is, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) | Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Nested => "an array or object",
        }
    }
}

type Fields<'a> = Vec<(Cow<'a, str>, Scalar<'a>)>;

thread_local! {
    /// The field list of the last record dropped on this thread, emptied, for the next one.
    static SPARE: RefCell<Fields<'static>> = const { RefCell::new(Vec::new()) };
}

/// The same storage, emptied and retyped for borrows of another message. (Collecting an
/// emptied vector's iterator into one of the same layout keeps its allocation.)
fn recycle<'b>(mut fields: Fields<'_>) -> Fields<'b> {
    fields.clear();
    fields
        .into_iter()
        .map(|_| unreachable!("emptied"))
        .collect()
}

/// A message's top-level fields, in their order in the message.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub fields: Fields<'a>,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let fields = recycle(std::mem::take(&mut self.fields));
        SPARE.with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if fields.capacity() > spare.capacity() {
                    *spare = fields;
                }
            }
        });
    }
}

impl<'a> Record<'a> {
    /// Parses a message value; the error says why it is not a JSON object. (Repeated field
    /// names are caught when the record is added to a batch.)
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
        let spare = SPARE.with(|spare| {
            spare
                .try_borrow_mut()
                .map(|mut s| recycle(std::mem::take(&mut *s)))
                .unwrap_or_default()
        });
        let mut record = Record { fields: spare };
        let mut de = serde_json::Deserializer::from_str(text);
        FieldsInto(&mut record.fields)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| format!("not valid JSON: {e}"))?;
        Ok(record)
    }

    /// The value of field `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Scalar<'a>> {
        self.position(name).map(|i| &self.fields[i].1)
    }

    /// Where field `name` is among the fields, if present.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|(n, _)| n == name)
    }

    /// The symbol in `field`: a string with more than white space.
    pub fn symbol(&self, field: &str) -> Result<&str, String> {
        match self.get(field) {
            Some(Scalar::Str(s)) if !s.trim().is_empty() => Ok(s),
            Some(Scalar::Str(_)) => Err(format!("field {field:?} is empty")),
            Some(other) => Err(format!(
                "field {field:?}: expected a string, got {}",
                other.describe()
            )),
            None => Err(format!("missing field {field:?}")),
        }
    }

    /// The event time in `field`, read with `format` from a date or date-time string, or
    /// from a Unix epoch in s, ms, µs or ns (told by its magnitude): where the field is,
    /// microseconds since the epoch, and whether it was a date alone.
    pub fn event_time(&self, field: &str, format: &TimeFormat) -> Result<EventTime, String> {
        let position = self
            .position(field)
            .ok_or_else(|| format!("missing field {field:?}"))?;
        let (micros, date_only) = match &self.fields[position].1 {
            Scalar::Str(s) => format
                .parse(s)
                .map_err(|why| format!("field {field:?}: {why}"))?,
            Scalar::Int(epoch) => (epoch_micros(*epoch), false),
            other => {
                return Err(format!(
                    "field {field:?}: expected a date string or an epoch, got {}",
                    other.describe()
                ))
            }
        };
        Ok(EventTime {
            field: position,
            micros,
            date_only,
        })
    }
}

/// A record's event time, and where its field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// The time field's index among the record's fields.
    pub field: usize,
    /// Microseconds since the epoch (UTC).
    pub micros: i64,
    /// The field held a date without a time of day.
    pub date_only: bool,
}

/// Deserializes a JSON object's fields into an existing list.
struct FieldsInto<'r, 'de>(&'r mut Fields<'de>);

impl<'de> DeserializeSeed<'de> for FieldsInto<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsInto<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(key)) = map.next_key()? {
            let value: Scalar = map.next_value()?;
            self.0.push((key, value));
        }
        Ok(())
    }
}

/// A string that borrows from the input when it can.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Nested)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Nested)
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_field_order_and_types() {
        let r =
            Record::parse(br#"{"Index":"NYA","Open":1.5,"Volume":3,"ok":true,"x":null,"n":[1]}"#)
                .unwrap();
        let names: Vec<_> = r.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["Index", "Open", "Volume", "ok", "x", "n"]);
        assert_eq!(r.get("Index"), Some(&Scalar::Str("NYA".into())));
        assert_eq!(r.get("Open"), Some(&Scalar::Float(1.5)));
        assert_eq!(r.get("Volume"), Some(&Scalar::Int(3)));
        assert_eq!(r.get("ok"), Some(&Scalar::Bool(true)));
        assert_eq!(r.get("x"), Some(&Scalar::Null));
        assert_eq!(r.get("n"), Some(&Scalar::Nested));
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases: [(&[u8], &str); 4] = [
            (b"not json", "not valid JSON"),
            (b"[1,2]", "not valid JSON"),
            (b"{\"a\":1", "not valid JSON"),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (input, expected) in cases {
            let err = Record::parse(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let r = Record::parse(br#"{"s":"a\"b\u00e9"}"#).unwrap();
        assert_eq!(r.get("s"), Some(&Scalar::Str("a\"b\u{e9}".into())));
    }
}
