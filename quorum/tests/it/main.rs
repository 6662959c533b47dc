//! The time core under simulation: seeded trials of honest and lying
//! sources, NTP exchanges over simulated asymmetric paths, and a real
//! NTP server (chronyd).
#![allow(clippy::unwrap_used)]

mod chrony;
mod exchanges;
mod liars;
mod roughtime;
