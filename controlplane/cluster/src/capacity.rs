//! How loaded a media server is, for placement: SFU transports and MCU connections each
//! against their own capacity, from the deployment's thresholds per core.
//!
//! The two cost very different amounts (an MCU connection decodes, mixes and encodes; a
//! transport forwards), so each is counted as its share of what the server takes of it, and
//! the shares add up: a server with half its transports and half its MCU connections is full.

use switchyard_store::Deployment;

/// Transports per core before a media server calls itself over capacity, when no deployment
/// says (`sfuConnectionsPerCpuUnsafe`); measured: one core forwards to 250 720p subscribers.
pub const DEFAULT_CONNECTIONS_PER_CORE: usize = 500;

/// MCU connections per MCU core when no deployment says (`mcuConnectionsPerCpuUnsafe`):
/// what one core held with a 640x360 composite (docs/benchmarks.md, "MCU capacity per core").
pub const DEFAULT_MCU_CONNECTIONS_PER_CORE: usize = 16;

/// What a media server takes before it is over capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// SFU transports (peer connections, pipes) on its media workers.
    pub transports: usize,
    /// MCU connections (mixed connections and views of the mix) on its MCU cores.
    pub mcu_connections: usize,
}

impl Capacity {
    /// The deployment's unsafe thresholds (else the defaults) per core: transports per media
    /// worker, MCU connections per MCU thread (the cores that mix; none: no MCU connections).
    pub fn of(deployment: Option<&Deployment>, workers: usize, mcu_threads: usize) -> Capacity {
        let (sfu, mcu) = deployment.map_or(
            (
                DEFAULT_CONNECTIONS_PER_CORE,
                DEFAULT_MCU_CONNECTIONS_PER_CORE,
            ),
            |d| {
                (
                    d.sfu_connections_per_cpu_unsafe as usize,
                    d.mcu_connections_per_cpu_unsafe as usize,
                )
            },
        );
        Capacity {
            transports: sfu * workers,
            mcu_connections: mcu * mcu_threads,
        }
    }

    /// The share of the server in use with `transports` SFU transports and `mcu` MCU
    /// connections: the sum of each against its capacity (1 or more is full). A capacity of
    /// 0 counts as 1, so that anything at all fills it.
    pub fn used(&self, transports: usize, mcu: usize) -> f64 {
        let share = |n: usize, of: usize| n as f64 / of.max(1) as f64;
        share(transports, self.transports) + share(mcu, self.mcu_connections)
    }

    /// Whether that load is over capacity: placement then prefers other servers.
    pub fn is_over(&self, transports: usize, mcu: usize) -> bool {
        self.used(transports, mcu) >= 1.0
    }
}

// ok: test code
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_and_mcu_connections_share_the_server() {
        let c = Capacity {
            transports: 100,
            mcu_connections: 10,
        };
        assert_eq!(c.used(0, 0), 0.0);
        assert_eq!(c.used(50, 0), 0.5);
        assert_eq!(c.used(0, 5), 0.5);
        assert!(!c.is_over(49, 5));
        assert!(c.is_over(50, 5), "half of each is full");
        assert!(c.is_over(0, 10));
        assert!(c.is_over(100, 0));
        assert_eq!(c.used(100, 10), 2.0, "beyond full, the share goes on");
    }

    #[test]
    fn no_mcu_cores_take_no_mcu_connection() {
        let c = Capacity::of(None, 2, 0);
        assert_eq!(c.mcu_connections, 0);
        assert!(!c.is_over(10, 0), "SFU alone is unaffected");
        assert!(c.is_over(0, 1));
    }

    #[test]
    fn thresholds_are_per_core_from_the_deployment_or_the_defaults() {
        assert_eq!(
            Capacity::of(None, 2, 1),
            Capacity {
                transports: 2 * DEFAULT_CONNECTIONS_PER_CORE,
                mcu_connections: DEFAULT_MCU_CONNECTIONS_PER_CORE,
            }
        );
        let d = Deployment {
            id: "d".into(),
            name: None,
            stun_servers: Vec::new(),
            sfu_connections_per_cpu_safe: 100,
            sfu_connections_per_cpu_unsafe: 150,
            mcu_connections_per_cpu_safe: 3,
            mcu_connections_per_cpu_unsafe: 4,
            clustering_strategy: switchyard_store::ClusteringStrategy::Region,
            turn_secret: None,
            turn_previous_secret: None,
        };
        let c = Capacity::of(Some(&d), 4, 2);
        assert_eq!(
            c,
            Capacity {
                transports: 600,
                mcu_connections: 8,
            }
        );
        // 300 transports and 4 MCU connections: half and half.
        assert!(c.is_over(300, 4));
        assert!(!c.is_over(299, 4));
    }
}
