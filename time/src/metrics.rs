//! The time service's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub source: String,
    pub state: String,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub rounds: Counter,
    pub synchronized: Gauge,
    pub agreeing: Gauge,
    pub configured: Gauge,
    pub uncertainty_ns: Gauge,
    pub source_offset_ns: Family<SourceLabel, Gauge>,
    pub source_distance_ns: Family<SourceLabel, Gauge>,
    /// 1 for the source's state in the last round, 0 for the others.
    pub source_state: Family<StateLabel, Gauge>,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("chronos_time");
        r.register("rounds", "Rounds of polling the time sources", self.rounds.clone());
        r.register("synchronized", "1 while the sources agree (quorum time is served)", self.synchronized.clone());
        r.register("sources_agreeing", "Sources that agreed in the last round", self.agreeing.clone());
        r.register("sources_configured", "Configured time sources", self.configured.clone());
        r.register("uncertainty_ns", "Half the width of the agreed interval, ns", self.uncertainty_ns.clone());
        r.register("source_offset_ns", "Each source's offset from the local clock, ns", self.source_offset_ns.clone());
        r.register("source_distance_ns", "Half of each source's interval, ns", self.source_distance_ns.clone());
        r.register("source_state", "Each source's state in the last round", self.source_state.clone());
    }
}
