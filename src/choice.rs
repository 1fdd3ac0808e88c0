//! Options that take one of a few names (a catalog, a format, a query engine): each is an
//! enum declared with [`choices!`], which reads any of a variant's names, case-insensitively,
//! and refuses anything else with an error listing the names it takes.

use crate::error::Error;

/// Declares a `Copy` enum whose variants are read from names (`FromStr`, trimming and
/// ignoring case) and written back by `name()` (a variant's first name).
///
/// ```ignore
/// choices! {
///     /// Where a query runs.
///     pub enum QueryEngine as "engine" {
///         /// Here.
///         Polars = ["polars", "local"],
///         Athena = ["athena"],
///     }
/// }
/// ```
macro_rules! choices {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $what:literal {
            $($(#[$vmeta:meta])* $variant:ident = [$first:literal $(, $alias:literal)*],)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The name this option is given by, as `parse` reads it back.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $first,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::Error;

            fn from_str(text: &str) -> $crate::error::Result<Self> {
                match text.trim().to_ascii_lowercase().as_str() {
                    $($first $(| $alias)* => Ok($name::$variant),)+
                    _ => Err($crate::choice::unknown($what, text, &[$($first),+])),
                }
            }
        }
    };
}

/// The error for a name no variant has: `format "avro" is not supported: use "parquet" or
/// "ndjson"`.
pub fn unknown(what: &str, text: &str, names: &[&str]) -> Error {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let choices = match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Error::config(format!(
        "{what} {:?} is not supported: use {choices}",
        text.trim().to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    choices! {
        /// A test option.
        pub enum Shade as "shade" {
            Light = ["light", "pale"],
            Dark = ["dark"],
            Grey = ["grey", "gray"],
        }
    }

    #[test]
    fn reads_any_name_of_a_variant_and_writes_back_its_first() {
        assert_eq!(" PALE ".parse::<Shade>().unwrap(), Shade::Light);
        assert_eq!("gray".parse::<Shade>().unwrap(), Shade::Grey);
        assert_eq!(Shade::Grey.name(), "grey");
        for shade in [Shade::Light, Shade::Dark, Shade::Grey] {
            assert_eq!(shade.name().parse::<Shade>().unwrap(), shade);
        }
    }

    #[test]
    fn refuses_other_names_listing_the_ones_it_takes() {
        let err = "Blue".parse::<Shade>().unwrap_err().to_string();
        assert!(
            err.contains(r#"shade "blue" is not supported: use "light", "dark" or "grey""#),
            "{err}"
        );
    }
}
