//! The time core under simulation: seeded trials of honest and lying
//! sources, and NTP exchanges over simulated asymmetric paths.
#![allow(clippy::unwrap_used)]

mod exchanges;
mod liars;
