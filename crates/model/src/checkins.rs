//! The weekly check-in ("State of the Union"): one per ISO week, each partner
//! filling in their own part.
//!
//! Layout: `checkins[week][seat]` is a map with the lists `appreciations`,
//! `went_well`, `agenda` (issue ids) and `time` (maps of `kind` and `minutes`),
//! and the scalars `request` and `rating`.
//!
//! Both partners (or one partner's two devices) may start this week's check-in
//! offline, so the week's map, or a seat's map in it, can be created twice
//! concurrently. Automerge keeps both as a conflict; reads here merge all of them,
//! so nothing either device wrote is hidden. List entries are written to the
//! winning object; a single value (`request`, `rating`) is written into every copy
//! of the partner's part, so that it replaces what each held.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::Serialize;

use crate::access::{self, SetValue};
use crate::conflict::{Conflict, values_conflict};
use crate::error::{InvalidInput, ModelError};
use crate::ids::ItemId;
use crate::issues;
use crate::space::{Editor, Person, map_in, person};
use crate::text::required_text;
use crate::vocab::{Rating, Seat, TimeKind, Week};

/// The weekly quality-time goal, in minutes (six hours).
pub const WEEKLY_GOAL_MINUTES: u32 = 6 * 60;

/// A week's check-in, both partners' parts.
#[derive(Debug, Clone, Serialize)]
pub struct CheckIn {
    /// The ISO week.
    pub week: Week,
    /// Seat a's part, then seat b's.
    pub partners: Vec<PartnerCheckIn>,
    /// Quality time logged by both, in minutes.
    pub total_minutes: u32,
    /// The weekly goal, in minutes.
    pub goal_minutes: u32,
    /// Fields with concurrent, different values.
    pub conflicts: Vec<Conflict>,
}

/// One partner's part of a check-in.
#[derive(Debug, Clone, Serialize)]
pub struct PartnerCheckIn {
    /// Whose part.
    pub partner: Person,
    /// Specific things the other did this week.
    pub appreciations: Vec<String>,
    /// What went well.
    pub went_well: Vec<String>,
    /// Issues to talk about.
    pub agenda: Vec<AgendaItem>,
    /// "What can I do next week to make you feel more loved?"
    pub request: Option<String>,
    /// The week's rating, 1 to 10.
    pub rating: Option<u8>,
    /// Quality-time minutes by kind.
    pub time: Vec<TimeSpent>,
}

/// An issue on the agenda.
#[derive(Debug, Clone, Serialize)]
pub struct AgendaItem {
    /// The issue's id.
    pub issue_id: ItemId,
    /// Its title, if the issue is known.
    pub title: Option<String>,
}

/// Minutes of one kind of quality time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimeSpent {
    /// The kind.
    pub kind: TimeKind,
    /// Minutes.
    pub minutes: u32,
}

/// Every week that has a check-in, newest first.
pub fn weeks(doc: &impl ReadDoc) -> Vec<Week> {
    let mut w: Vec<Week> = access::collection(doc, "checkins")
        .iter()
        .flat_map(|c| access::keys(doc, c))
        .filter_map(|k| k.parse().ok())
        .collect();
    w.sort_by(|a, b| b.cmp(a));
    w.dedup();
    w
}

/// The check-in of `week` (empty parts if nobody has started it).
pub fn checkin(doc: &impl ReadDoc, week: Week) -> CheckIn {
    let mut conflicts = Vec::new();
    let partners: Vec<PartnerCheckIn> = Seat::ALL
        .iter()
        .map(|&seat| read_part(doc, seat, &parts(doc, week, seat), &mut conflicts))
        .collect();
    let total_minutes = partners
        .iter()
        .flat_map(|p| p.time.iter())
        .map(|t| t.minutes)
        .sum();
    CheckIn {
        week,
        partners,
        total_minutes,
        goal_minutes: WEEKLY_GOAL_MINUTES,
        conflicts,
    }
}

fn read_part(
    doc: &impl ReadDoc,
    seat: Seat,
    parts: &[ObjId],
    conflicts: &mut Vec<Conflict>,
) -> PartnerCheckIn {
    let list = |key: &str| -> Vec<ObjId> {
        parts
            .iter()
            .filter_map(|p| access::object(doc, p, key, ObjType::List))
            .collect()
    };
    let strings = |key: &str| -> Vec<String> {
        list(key)
            .iter()
            .flat_map(|l| access::string_list(doc, l))
            .collect()
    };
    let mut agenda: Vec<AgendaItem> = Vec::new();
    for id in strings("agenda").iter().filter_map(|s| ItemId::from_stored(s)) {
        if !agenda.iter().any(|a| a.issue_id == id) {
            let title = issues::issue(doc, &id).map(|i| i.title);
            agenda.push(AgendaItem { issue_id: id, title });
        }
    }
    let mut minutes = [0u32; TimeKind::ALL.len()];
    for l in list("time") {
        for i in 0..doc.length(&l) {
            let Ok(Some((automerge::Value::Object(ObjType::Map), entry))) = doc.get(&l, i) else {
                continue;
            };
            let kind = access::string(doc, &entry, "kind").and_then(|k| k.parse::<TimeKind>().ok());
            let mins = access::int(doc, &entry, "minutes").and_then(|m| u32::try_from(m).ok());
            if let (Some(k), Some(m)) = (kind, mins)
                && let Some(pos) = TimeKind::ALL.iter().position(|x| *x == k)
            {
                minutes[pos] = minutes[pos].saturating_add(m.min(MAX_MINUTES));
            }
        }
    }
    let time = TimeKind::ALL
        .iter()
        .zip(minutes)
        .filter(|(_, m)| *m > 0)
        .map(|(&kind, minutes)| TimeSpent { kind, minutes })
        .collect();
    // Scalars: gather every value from every copy of this part; the first is shown.
    let gather = |key: &str| -> Vec<SetValue> {
        parts
            .iter()
            .flat_map(|p| access::all_scalars(doc, p, key))
            .collect()
    };
    let request_values = gather("request");
    let rating_values = gather("rating");
    let prefix = format!("{}.", seat.as_str());
    for (field, values) in [("request", &request_values), ("rating", &rating_values)] {
        if let Some(mut c) = values_conflict(doc, field, values.clone()) {
            c.field = format!("{prefix}{field}");
            conflicts.push(c);
        }
    }
    PartnerCheckIn {
        partner: person(doc, seat),
        appreciations: strings("appreciations"),
        went_well: strings("went_well"),
        agenda,
        request: request_values
            .first()
            .and_then(|v| v.value.as_str().map(str::to_string)),
        rating: rating_values
            .first()
            .and_then(|v| access::scalar_int(&v.value))
            .and_then(|n| Rating::new(n).ok())
            .map(Rating::get),
        time,
    }
}

/// The most minutes one entry may log: a day.
pub const MAX_MINUTES: u32 = 24 * 60;

/// Parses minutes of quality time.
pub fn parse_minutes(s: &str) -> Result<u32, InvalidInput> {
    match s.trim().parse::<u32>() {
        Ok(m) if (1..=MAX_MINUTES).contains(&m) => Ok(m),
        _ => Err(InvalidInput::Minutes(s.to_string())),
    }
}

/// Every copy of `seat`'s part of `week` (see the module docs), the winner first.
fn parts(doc: &impl ReadDoc, week: Week, seat: Seat) -> Vec<ObjId> {
    let key = week.to_string();
    access::collection(doc, "checkins")
        .iter()
        .flat_map(|c| access::objects(doc, c, &key, ObjType::Map))
        .flat_map(|w| access::objects(doc, &w, seat.as_str(), ObjType::Map))
        .collect()
}

/// This partner's part of `week`, created if absent (see the module docs).
fn my_part(
    tx: &mut automerge::transaction::Transaction<'_>,
    week: Week,
    seat: Seat,
) -> Result<ObjId, ModelError> {
    let checkins = map_in(tx, &ROOT, "checkins")?;
    let w = map_in(tx, &checkins, &week.to_string())?;
    if let Some(part) = access::object(&*tx, &w, seat.as_str(), ObjType::Map) {
        return Ok(part);
    }
    let part = tx.put_object(&w, seat.as_str(), ObjType::Map)?;
    for list in ["appreciations", "went_well", "agenda", "time"] {
        tx.put_object(&part, list, ObjType::List)?;
    }
    Ok(part)
}

fn append(
    tx: &mut automerge::transaction::Transaction<'_>,
    part: &ObjId,
    list: &str,
) -> Result<(ObjId, usize), ModelError> {
    let l = match access::object(&*tx, part, list, ObjType::List) {
        Some(l) => l,
        None => tx.put_object(part, list, ObjType::List)?,
    };
    let at = tx.length(&l);
    Ok((l, at))
}

/// What a partner adds to their part of a check-in.
#[derive(Debug, Clone)]
pub enum CheckInEntry {
    /// Something specific the other did.
    Appreciation(String),
    /// Something that went well.
    WentWell(String),
    /// An issue to talk about.
    Agenda(ItemId),
    /// The closing request.
    Request(String),
    /// The week's rating.
    Rating(Rating),
    /// Quality time.
    Time(TimeKind, u32),
}

impl Editor<'_> {
    /// Adds `entry` to this partner's part of `week`'s check-in.
    pub fn checkin(&mut self, week: Week, entry: &CheckInEntry) -> Result<(), ModelError> {
        match entry {
            CheckInEntry::Appreciation(t) => {
                required_text("appreciation", t)?;
            }
            CheckInEntry::WentWell(t) => {
                required_text("what went well", t)?;
            }
            CheckInEntry::Request(t) => {
                required_text("request", t)?;
            }
            CheckInEntry::Time(_, m) if !(1..=MAX_MINUTES).contains(m) => {
                return Err(InvalidInput::Minutes(m.to_string()).into());
            }
            CheckInEntry::Agenda(id) if issues::issue(&*self.doc, id).is_none() => {
                return Err(ModelError::NotFound {
                    what: "issue",
                    prefix: id.to_string(),
                });
            }
            _ => {}
        }
        self.change(format!("check-in {week}"), |tx, seat, now| {
            let part = my_part(tx, week, seat)?;
            match entry {
                CheckInEntry::Appreciation(t) | CheckInEntry::WentWell(t) => {
                    let key = if matches!(entry, CheckInEntry::Appreciation(_)) {
                        "appreciations"
                    } else {
                        "went_well"
                    };
                    let (l, at) = append(tx, &part, key)?;
                    tx.insert(&l, at, t.trim())?;
                }
                CheckInEntry::Agenda(id) => {
                    let (l, at) = append(tx, &part, "agenda")?;
                    tx.insert(&l, at, id.as_str())?;
                }
                // A single value is written into every copy of this partner's
                // part, so that it replaces what each copy held: reads gather all
                // copies, and a value left in one would still show.
                CheckInEntry::Request(t) => {
                    for p in parts(&*tx, week, seat) {
                        tx.put(&p, "request", t.trim())?;
                    }
                }
                CheckInEntry::Rating(r) => {
                    for p in parts(&*tx, week, seat) {
                        tx.put(&p, "rating", ScalarValue::Int(r.get() as i64))?;
                    }
                }
                CheckInEntry::Time(kind, minutes) => {
                    let (l, at) = append(tx, &part, "time")?;
                    let e = tx.insert_object(&l, at, ObjType::Map)?;
                    tx.put(&e, "kind", kind.as_str())?;
                    tx.put(&e, "minutes", ScalarValue::Int(*minutes as i64))?;
                    tx.put(&e, "at", ScalarValue::Timestamp(now))?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceSecret;
    use crate::space::tests::founded;

    #[test]
    fn both_partners_starting_the_week_offline_get_one_checkin() {
        let (mut a, _) = founded(1);
        let b_dev = DeviceSecret::from_bytes(&[2; 32]).device_id();
        Editor::new(&mut a, Seat::A, 1)
            .add_device(b_dev, Seat::B, "phone")
            .unwrap();
        let a2_dev = DeviceSecret::from_bytes(&[3; 32]).device_id();
        Editor::new(&mut a, Seat::A, 1)
            .add_device(a2_dev, Seat::A, "tablet")
            .unwrap();
        let mut b = a.fork().with_actor(b_dev.actor());
        let mut a2 = a.fork().with_actor(a2_dev.actor());
        let week: Week = "2026-W48".parse().unwrap();

        Editor::new(&mut a, Seat::A, 2)
            .checkin(week, &CheckInEntry::Appreciation("made dinner".into()))
            .unwrap();
        Editor::new(&mut a, Seat::A, 2)
            .checkin(week, &CheckInEntry::Rating(Rating::new(8).unwrap()))
            .unwrap();
        Editor::new(&mut a2, Seat::A, 2)
            .checkin(week, &CheckInEntry::Time(TimeKind::Date, 120))
            .unwrap();
        Editor::new(&mut a2, Seat::A, 2)
            .checkin(week, &CheckInEntry::Rating(Rating::new(6).unwrap()))
            .unwrap();
        Editor::new(&mut b, Seat::B, 2)
            .checkin(week, &CheckInEntry::WentWell("the walk".into()))
            .unwrap();
        Editor::new(&mut b, Seat::B, 2)
            .checkin(week, &CheckInEntry::Time(TimeKind::Date, 120))
            .unwrap();
        a.merge(&mut b).unwrap();
        a.merge(&mut a2).unwrap();

        assert_eq!(weeks(&a), [week]);
        let c = checkin(&a, week);
        assert_eq!(c.partners[0].appreciations, ["made dinner"]);
        assert_eq!(c.partners[0].time[0].minutes, 120);
        assert_eq!(c.partners[1].went_well, ["the walk"]);
        assert_eq!(c.total_minutes, 240);
        // Two devices of seat a rated the week differently: shown as a conflict.
        let conflict = c
            .conflicts
            .iter()
            .find(|c| c.field == "a.rating")
            .expect("rating conflict");
        assert_eq!(conflict.values.len(), 2);
    }

    #[test]
    fn checkin_input_is_checked() {
        let (mut doc, _) = founded(1);
        let week: Week = "2026-W48".parse().unwrap();
        let mut e = Editor::new(&mut doc, Seat::A, 0);
        assert!(e.checkin(week, &CheckInEntry::Appreciation("  ".into())).is_err());
        assert!(e.checkin(week, &CheckInEntry::Time(TimeKind::Date, 0)).is_err());
        assert!(
            e.checkin(week, &CheckInEntry::Agenda(ItemId::from_random([1; 8])))
                .is_err()
        );
        assert!(weeks(&doc).is_empty());
        assert!(parse_minutes("90").is_ok());
        assert!(parse_minutes("-5").is_err());
        assert!(parse_minutes("2000").is_err());
    }
}
