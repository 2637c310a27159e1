//! Enums whose values are named on the command line, in the CRD and in messages: one macro
//! gives each its list, its names, `Display` and a `FromStr` whose error says what was expected.

/// `named_values!(Type, UnknownType, "what it is", { Variant => "name", ... })` implements
/// `Type::ALL`, `Type::as_str`, `Display`, and `FromStr` failing with `UnknownType(name)`, whose
/// message is `unknown what it is "name" (expected a or b)`.
macro_rules! named_values {
    ($ty:ident, $unknown:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: [Self; [$($name),+].len()] = [$(Self::$variant),+];

            /// The name on the command line and in the CRD.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A name that is none of the values.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $unknown(pub String);

        impl std::fmt::Display for $unknown {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let names: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                write!(f, "unknown {} {:?} (expected {})", $what, self.0, names.join(" or "))
            }
        }

        impl std::error::Error for $unknown {}

        impl std::str::FromStr for $ty {
            type Err = $unknown;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == name)
                    .ok_or_else(|| $unknown(name.to_string()))
            }
        }
    };
}

pub(crate) use named_values;
