//! The time service's rounds over real UDP, against NTP servers on
//! loopback that lie in each of the ways the simulations of
//! `chronos-quorum` model.
#![allow(clippy::unwrap_used)]

mod liars;
