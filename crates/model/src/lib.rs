//! The couple document: one [automerge] document per couple ("space") holding
//! their issues with steps and notes, weekly check-ins, agreements, and the two
//! partners with their devices.
//!
//! This crate is pure logic: no files, no sockets, no clock and no randomness of
//! its own (times and ids are passed in), so every behaviour is testable and
//! deterministic.
//!
//! # Layout
//! - [`space`]: the document root, the schema version, partners, devices, and
//!   the [`Editor`] through which every change is made;
//! - [`issues`], [`checkins`], [`agreements`]: typed reads and edits of each
//!   part of the record;
//! - [`conflict`]: concurrent edits of one field, shown with who set each value;
//! - [`vocab`]: the closed vocabularies (statuses, kinds, weeks, ...);
//! - [`identity`]: device keys, whose public half is the automerge actor id.
//!
//! # Example
//! ```
//! use automerge::Automerge;
//! use duet_model::{DeviceSecret, Editor, Founder, ItemId, NewIssue, Seat, issues, space};
//!
//! let device = DeviceSecret::from_bytes(&[1; 32]).device_id();
//! let mut doc = Automerge::new().with_actor(device.actor());
//! let founder = Founder {
//!     space_id: "5eed".into(),
//!     name: "Sam".into(),
//!     device,
//!     device_name: "laptop".into(),
//! };
//! space::create(&mut doc, &founder, 1_764_000_000_000)?;
//! let id = ItemId::from_random([7; 8]);
//! let new = NewIssue { title: "Who does the dishes".into(), ..Default::default() };
//! Editor::new(&mut doc, Seat::A, 1_764_000_000_000).add_issue(&id, &new)?;
//! assert_eq!(issues::issue(&doc, &id).unwrap().raised_by.name, "Sam");
//! # Ok::<(), duet_model::ModelError>(())
//! ```

mod access;
pub mod agreements;
pub mod authority;
pub mod checkins;
pub mod conflict;
mod error;
pub mod identity;
mod ids;
pub mod issues;
pub mod keys;
pub mod members;
pub mod space;
mod text;
pub mod vocab;

pub use agreements::Agreement;
pub use checkins::{CheckIn, CheckInEntry};
pub use conflict::{Conflict, ConflictValue, Moment};
pub use error::{InvalidInput, MAX_TEXT_BYTES, MAX_TITLE_CHARS, ModelError};
pub use identity::{Attestation, DeviceId, DeviceSecret};
pub use ids::{ItemId, SHORT_ID_LEN};
pub use issues::{Issue, IssueEdit, IssueFilter, NewIssue, Note, SoftStartup, Step};
pub use members::{ChangeRefusal, Member, Membership};
pub use space::{Editor, Founder, Person, SCHEMA_VERSION, SchemaCheck};
pub use text::{check_text, check_title, required_text, short_text};
pub use vocab::{AgreementKind, IssueKind, IssueStatus, Outcome, Owner, Rating, Seat, TimeKind, Week};

pub use automerge;
