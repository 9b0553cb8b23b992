//! Security labels for Enclave.
//!
//! Every decision Enclave makes rests on a [`Label`]: the classification level, the compartments
//! and the releasability of a piece of data, a session, a clearance or a backend's accreditation.
//! This crate reads and writes labels as CAPCO markings, orders them in a lattice and finds
//! markings hidden in free text:
//!
//! - [`parse_marking`] reads a banner (`TOP SECRET//SI/TK//NOFORN`) or a portion mark
//!   (`(TS//SI/TK//NF)`) in [`Mode::Strict`] or [`Mode::Lenient`] mode; a rejection carries a
//!   stable [`ReasonCode`]. [`Label`]'s `Display` writes the canonical banner and
//!   [`Label::portion`] the portion mark; parsing what was rendered gives the label back.
//! - [`Label::dominates`] and [`Label::join`] are the lattice: dominance compares level,
//!   compartments and releasability; join is the banner roll-up of the register's rules.
//!   [`Clearance`] and [`Accreditation`] check a person or a backend against a data label,
//!   nationality included.
//! - [`scan`] finds banner lines and portion marks in a prompt or document — in any case,
//!   spacing, with look-alike letters or invisible characters — tells the markings that mark the
//!   text ([`Placement::Asserted`]) from those a sentence talks about
//!   ([`Placement::Mentioned`]: "What does SECRET//NOFORN mean?"), and rolls each kind up.
//!
//! The controlled values (country codes, SCI systems, CUI categories) are compiled in from the
//! CSV files under `data/`. The crate does no I/O, spawns nothing and knows nothing of HTTP.
//!
//! ```
//! use enclave_label::{scan, Label};
//! let session: Label = "SECRET//NOFORN".parse()?;
//! let found = scan("Summarize this:\nTOP SECRET//SI//NOFORN\n(TS//SI//NF) Sources report...");
//! assert!(!session.dominates(&found.label)); // spillage
//! # Ok::<(), enclave_label::MarkingError>(())
//! ```

#![deny(clippy::indexing_slicing)]

mod error;
mod fields;
mod fold;
mod label;
mod lattice;
mod marking;
mod registry;
mod scan;
mod spelled;

pub use error::{MarkingError, ReasonCode};
pub use fields::{CuiFields, MarkingFields};
pub use fold::{Folded, fold};
pub use label::{Aea, Cui, Dissem, Fgi, Label, Ldc, Level, NonIc, NonUsControl, Owner};
pub use lattice::{AccessClass, Accreditation, Clearance, Denial, Nations, rollup};
pub use marking::{Form, MAX_MARKING_BYTES, Marking, Mode, parse_marking};
pub use registry::{Country, USA, country_codes};
pub use scan::{Found, Placement, Scan, scan};
