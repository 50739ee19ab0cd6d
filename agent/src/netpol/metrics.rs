//! The NetworkPolicy compiler's state on the agent's `/metrics`: how many
//! policies select local pods, how many local pods they isolate, the size
//! of the compiled tier, how long compiles take and what failed.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use super::model::Compiled;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Listing or watching Pods, Namespaces, NetworkPolicies or this Node.
    Watch,
    /// Handing a compiled tier to the kernel writer.
    Write,
}

impl Stage {
    const ALL: [Self; 2] = [Self::Watch, Self::Write];

    fn label(self) -> StageLabel {
        let stage = match self {
            Self::Watch => "watch",
            Self::Write => "write",
        };
        StageLabel { stage }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Debug, Clone)]
pub struct PolicyMetrics {
    policies: Gauge,
    local_pods: Gauge,
    peers: Gauge,
    rules: Gauge,
    compile_seconds: Histogram,
    errors: Family<StageLabel, Counter>,
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PolicyMetrics {
    /// Registers the family in `registry` (the agent's, prefix
    /// `podmeter_agent`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            policies: Gauge::default(),
            local_pods: Gauge::default(),
            peers: Gauge::default(),
            rules: Gauge::default(),
            // 1 ms to ~4 s.
            compile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            errors: Family::default(),
        };
        for (name, help, gauge) in [
            ("network_policies", "NetworkPolicies that select a pod on this node", &m.policies),
            (
                "policy_local_pods",
                "Pods on this node isolated by NetworkPolicy in at least one direction",
                &m.local_pods,
            ),
            (
                "policy_peers",
                "Entries of the compiled peer table (pod addresses, CIDR regions, this node)",
                &m.peers,
            ),
            (
                "policy_rules",
                "Compiled kubernetes-tier rules over all local pods (before port ranges become prefixes)",
                &m.rules,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "policy_compile_seconds",
            "Time to compile the kubernetes tier from the API objects",
            m.compile_seconds.clone(),
        );
        registry.register(
            "policy_errors",
            "Failed NetworkPolicy watches and writes, by stage (watch, write)",
            m.errors.clone(),
        );
        for stage in Stage::ALL {
            drop(m.errors.get_or_create(&stage.label()));
        }
        m
    }

    pub fn compiled(&self, c: &Compiled, seconds: f64) {
        self.policies.set(count(c.policy_names.len()));
        self.local_pods.set(count(c.isolated_pods()));
        self.peers.set(count(c.peers.len()));
        self.rules.set(count(c.rule_count()));
        self.compile_seconds.observe(seconds);
    }

    pub fn error(&self, stage: Stage) {
        self.errors.get_or_create(&stage.label()).inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn every_metric_is_there_from_the_start() {
        let mut registry = Registry::with_prefix("podmeter_agent");
        let m = PolicyMetrics::register(&mut registry);
        m.compiled(&Compiled::default(), 0.002);
        m.error(Stage::Write);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "podmeter_agent_network_policies 0",
            "podmeter_agent_policy_local_pods 0",
            "podmeter_agent_policy_peers 0",
            "podmeter_agent_policy_rules 0",
            "podmeter_agent_policy_compile_seconds_count 1",
            "podmeter_agent_policy_errors_total{stage=\"watch\"} 0",
            "podmeter_agent_policy_errors_total{stage=\"write\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
