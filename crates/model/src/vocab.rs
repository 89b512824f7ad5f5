//! The small closed vocabularies of the couple document: seats, kinds, statuses,
//! outcomes, ISO weeks and dates. Each parses from the word a person types and
//! renders back to the word stored in the document.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::InvalidInput;

/// Declares a closed vocabulary: an enum whose variants are stored in the document
/// and typed on the command line as the same lowercase word.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in display order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word stored in the document and typed on the command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err(InvalidInput::Word {
                        what: $what,
                        got: s.to_string(),
                        expected: [$($word),+].join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

vocabulary!(
    /// One of the two partners of a space. The partner who created the space sits in
    /// seat `a`; the partner who joins sits in seat `b`. Seats, not names, are what
    /// the document stores, so a rename never rewrites history.
    Seat, "partner", {
        /// The partner who created the space.
        A => "a",
        /// The partner who joined it.
        B => "b",
    }
);

impl Seat {
    /// The other partner's seat.
    pub fn other(self) -> Seat {
        match self {
            Seat::A => Seat::B,
            Seat::B => Seat::A,
        }
    }
}

vocabulary!(
    /// Whether an issue can be solved, or is a perpetual one to be managed.
    IssueKind, "kind", {
        /// Not yet classified.
        Unclassified => "unclassified",
        /// Can be solved for good.
        Solvable => "solvable",
        /// Perpetual: managed, never resolved.
        Perpetual => "perpetual",
    }
);

vocabulary!(
    /// Where the work on an issue stands.
    IssueStatus, "status", {
        /// Raised, not yet talked about.
        Open => "open",
        /// Being talked about.
        Discussing => "discussing",
        /// A plan is agreed.
        Agreed => "agreed",
        /// Solved (solvable issues).
        Resolved => "resolved",
        /// Being managed (perpetual issues).
        Managing => "managing",
        /// Set aside for now.
        Parked => "parked",
    }
);

impl IssueStatus {
    /// True while the issue still needs attention.
    pub fn is_active(self) -> bool {
        !matches!(self, IssueStatus::Resolved | IssueStatus::Parked)
    }
}

vocabulary!(
    /// How a committed step turned out.
    Outcome, "outcome", {
        /// Done as promised.
        Kept => "kept",
        /// Partly done.
        Partly => "partly",
        /// Not done.
        Missed => "missed",
        /// Changed by agreement.
        Renegotiated => "renegotiated",
    }
);

vocabulary!(
    /// What kind of agreement this is.
    AgreementKind, "agreement kind", {
        /// A personal boundary.
        Boundary => "boundary",
        /// A rule for how conflict is handled.
        ConflictRule => "conflict-rule",
        /// A shared ritual.
        Ritual => "ritual",
    }
);

vocabulary!(
    /// The kinds of weekly quality time (the "six hours").
    TimeKind, "quality-time kind", {
        /// Saying goodbye in the morning.
        Parting => "parting",
        /// Reuniting at the end of the day.
        Reunion => "reunion",
        /// Daily appreciation.
        Appreciation => "appreciation",
        /// Affection.
        Affection => "affection",
        /// The weekly date.
        Date => "date",
        /// The State of the Union meeting itself.
        Meeting => "meeting",
    }
);

/// Who owns a step: one partner, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// One partner.
    One(Seat),
    /// Both partners.
    Both,
}

impl Owner {
    /// The word stored in the document: a seat, or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::One(seat) => seat.as_str(),
            Owner::Both => "both",
        }
    }

    /// Parses the stored word.
    pub fn parse_stored(s: &str) -> Option<Owner> {
        match s {
            "both" => Some(Owner::Both),
            other => other.parse().ok().map(Owner::One),
        }
    }

    /// True if this owner includes `seat`.
    pub fn includes(self, seat: Seat) -> bool {
        match self {
            Owner::One(s) => s == seat,
            Owner::Both => true,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An ISO 8601 week, such as `2026-W48`: the key of a weekly check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Week {
    year: i16,
    week: i8,
}

impl Week {
    /// The ISO week that contains `date`.
    pub fn containing(date: jiff::civil::Date) -> Week {
        let iso = date.iso_week_date();
        Week {
            year: iso.year(),
            week: iso.week(),
        }
    }

    /// The Monday this week starts on.
    pub fn monday(self) -> jiff::civil::Date {
        // A Week is only built from a valid ISO week date, so this cannot fail;
        // fall back to the first day of the year rather than panic.
        jiff::civil::ISOWeekDate::new(self.year, self.week, jiff::civil::Weekday::Monday)
            .map(|d| d.date())
            .unwrap_or_else(|_| jiff::civil::date(self.year, 1, 1))
    }
}

impl FromStr for Week {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidInput::Week(s.to_string());
        let t = s.trim();
        let (y, w) = t.split_once(['-', ' ']).ok_or_else(bad)?;
        let w = w.strip_prefix(['W', 'w']).ok_or_else(bad)?;
        if y.len() != 4 || w.is_empty() || w.len() > 2 {
            return Err(bad());
        }
        let year: i16 = y.parse().map_err(|_| bad())?;
        let week: i8 = w.parse().map_err(|_| bad())?;
        jiff::civil::ISOWeekDate::new(year, week, jiff::civil::Weekday::Monday).map_err(|_| bad())?;
        Ok(Week { year, week })
    }
}

impl fmt::Display for Week {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl Serialize for Week {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a calendar date typed as `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<jiff::civil::Date, InvalidInput> {
    let t = s.trim();
    if t.len() != 10 {
        return Err(InvalidInput::Date(s.to_string()));
    }
    t.parse().map_err(|_| InvalidInput::Date(s.to_string()))
}

/// A rating of the week, from 1 to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Rating(u8);

impl Rating {
    /// Validates a rating.
    pub fn new(n: i64) -> Result<Rating, InvalidInput> {
        if (1..=10).contains(&n) {
            Ok(Rating(n as u8))
        } else {
            Err(InvalidInput::Rating(n.to_string()))
        }
    }

    /// The rating as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl FromStr for Rating {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: i64 = s
            .trim()
            .parse()
            .map_err(|_| InvalidInput::Rating(s.to_string()))?;
        Rating::new(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in IssueStatus::ALL {
            assert_eq!(s.as_str().parse::<IssueStatus>().ok(), Some(*s));
        }
        for k in TimeKind::ALL {
            assert_eq!(k.as_str().parse::<TimeKind>().ok(), Some(*k));
        }
        assert_eq!("Perpetual".parse::<IssueKind>().ok(), Some(IssueKind::Perpetual));
        let err = "closed".parse::<IssueStatus>().unwrap_err().to_string();
        assert!(err.contains("closed") && err.contains("managing"), "{err}");
    }

    #[test]
    fn owners() {
        assert_eq!(Owner::parse_stored("both"), Some(Owner::Both));
        assert_eq!(Owner::parse_stored("b"), Some(Owner::One(Seat::B)));
        assert_eq!(Owner::parse_stored("c"), None);
        assert!(Owner::Both.includes(Seat::A));
        assert!(!Owner::One(Seat::B).includes(Seat::A));
    }

    #[test]
    fn weeks() {
        let w: Week = "2026-W48".parse().unwrap();
        assert_eq!(w.to_string(), "2026-W48");
        assert_eq!(w.monday(), jiff::civil::date(2026, 11, 23));
        assert_eq!(Week::containing(jiff::civil::date(2026, 11, 28)), w);
        // 2027-01-01 is a Friday, in the last ISO week of 2026.
        assert_eq!(
            Week::containing(jiff::civil::date(2027, 1, 1)).to_string(),
            "2026-W53"
        );
        for bad in [
            "2026-W54", "2025-W53", "2026-48", "26-W01", "2026-W", "", "2026-W0",
        ] {
            assert!(bad.parse::<Week>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn dates_and_ratings() {
        assert!(parse_date("2026-12-01").is_ok());
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("tomorrow").is_err());
        assert!(Rating::new(0).is_err());
        assert!(Rating::new(11).is_err());
        assert_eq!("7".parse::<Rating>().unwrap().get(), 7);
        assert!("seven".parse::<Rating>().is_err());
    }
}
