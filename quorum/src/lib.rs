//! Trusted time for Chronos, the protocol core: measurements of time
//! sources in, an interval that contains true time out.
//!
//! Every source gives a *correctness interval*: an earliest and a latest
//! Unix time between which true time lay at the instant of its measurement
//! (an NTP server: offset ± (delay/2 + root distance); a Roughtime server:
//! midpoint ± radius; the host clock: its kernel maximum error). The crate
//! then
//!
//! * carries each interval to a common instant of the monotonic clock,
//!   widening it by the maximum drift ([`Interval::carried`]);
//! * selects ([`select`]): the agreed interval is the smallest interval
//!   that holds every instant on which at least a strict majority of the
//!   configured sources (and at least `min_agreeing`) agree. If at most
//!   that many sources lie, it contains true time whatever the liars
//!   answer, and it lies within the honest sources' own intervals; sources
//!   that share no instant with it are named falsetickers;
//! * keeps a clock between rounds ([`clock`]): the agreed interval moves
//!   with the monotonic clock and widens by the maximum drift, and what it
//!   serves never moves backwards;
//! * records each round as [`evidence`] that a batch's time names by its
//!   digest and that anyone can check again;
//! * reads and writes NTPv4 packets and turns the four timestamps of an
//!   exchange into a correctness interval ([`ntp`]), and answers clients
//!   as a server from the clock it is given ([`ntp_server`]);
//! * builds Roughtime requests and verifies signed answers (delegation,
//!   Merkle path, validity window) into a correctness interval, chaining a
//!   round's requests so that a server whose time contradicts causality
//!   leaves a malfeasance report anyone can re-check ([`roughtime`]).
//!
//! What it does not do: any I/O. No sockets, no clock reads (every instant
//! is given to it), no threads, no storage. The time service beside it
//! polls the sources, publishes the clock and keeps the floor in
//! PostgreSQL. This split (as in ntpd-rs's `ntp-proto`) lets tests drive
//! the core with a simulated clock and network, thousands of trials at a
//! time.

pub mod clock;
pub mod evidence;
pub mod interval;
pub mod ntp;
pub mod ntp_server;
pub mod roughtime;
pub mod select;

pub use clock::{Clock, Served};
pub use interval::Interval;
pub use select::{Round, Rules, Verdict, combine, select};
