//! The rules of pg_entitlements, free of PostgreSQL.
//!
//! Everything here is plain Rust with ordinary unit and property tests: billing periods
//! ([`period`]), limits and their precedence ([`limit`]), the quota figures a check returns
//! ([`status`]), feature kinds ([`kind`]), several limits on one feature ([`windows`]), which subscription counts ([`subscription`]), storage units ([`units`]), grants ([`grants`]) and holds ([`holds`]), which node of a Citus cluster serves a user ([`placement`]) and the one error type ([`error`]). The extension
//! crate only converts PostgreSQL values into these types, calls them, and converts back.

pub mod alerts;
pub mod binding;
pub mod error;
pub mod grants;
pub mod holds;
pub mod keys;
pub mod kind;
pub mod limit;
pub mod overage;
pub mod period;
pub mod placement;
pub mod rollover;
pub mod status;
pub mod subscription;
pub mod units;
pub mod windows;

pub use error::{Error, ErrorKind, Subject};
pub use kind::{Entitlement, Kind};
pub use limit::{Limit, Resolved, Source};
pub use period::{Cycle, Period, ResetRule};
pub use status::QuotaStatus;
