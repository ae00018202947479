//! Consistent hash ring of chat servers, used to spread clients over the
//! upstream servers of a load balancer (the seeds' nginx configurator).
//!
//! A server is identified by its address `HOST:PORT` (an IPv6 literal host is
//! written in brackets, `[::1]:6000`). When a server is added with `v`
//! virtual nodes, the strings `"HOST:PORT#0"` … `"HOST:PORT#{v-1}"` are hashed
//! and each hash becomes one point of the ring owned by that server. A key
//! (for the chat server: a client address `IP:PORT`) is hashed the same way
//! and belongs to the owner of the first ring point whose position is `>=` the
//! key's hash, wrapping around to the smallest point after the largest one.
//!
//! # The hash
//!
//! The position of a string is [`hash_key`]: 64-bit FNV-1a over its UTF-8
//! bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`), followed
//! by the SplitMix64 finaliser (Stafford's "Mix13": `z ^= z >> 30;
//! z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
//! z ^= z >> 31`, wrapping multiplications). FNV-1a alone maps similar strings
//! such as `"h:p#1"` and `"h:p#2"` to related values, which makes the ring
//! lumpy (server shares off by ~50% on average at 160 virtual nodes); the
//! finaliser is a bijection in which every input bit avalanches over the whole
//! 64-bit result, so points behave like uniformly random positions. The
//! function is fixed and platform independent, so a mapping is identical on
//! every run and every machine; changing it changes every mapping.
//!
//! If two points ever land on the same position (vanishingly unlikely with
//! 64 bits), they are ordered by server address, so the ring does not depend
//! on the order in which servers were added.
//!
//! The command interpreter of the `ConsistentHash` binary is [`shell`].
//!
//! # Example
//!
//! ```
//! use chat::ring::HashRing;
//!
//! let mut ring = HashRing::new();
//! ring.add("127.0.0.1", 6000, 160).unwrap();
//! ring.add("127.0.0.1", 6002, 160).unwrap();
//! let server = ring.get("10.0.0.1:5555").unwrap();
//! assert!(server == "127.0.0.1:6000" || server == "127.0.0.1:6002");
//! assert_eq!(ring.all_nodes(), 320);
//! ```

pub mod shell;

use std::fmt;

/// Largest number of virtual nodes one server may have.
///
/// It bounds the memory a single [`HashRing::add`] can take (each virtual
/// node is one ring point); a few hundred per server is already plenty.
pub const MAX_VIRTUAL_NODES: u32 = 1 << 16;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Ring position of `key`: 64-bit FNV-1a of its UTF-8 bytes, finalised with
/// the SplitMix64 finaliser (see the module documentation).
///
/// ```
/// // Pinned: a different value means every mapping of every ring changed.
/// assert_eq!(chat::ring::hash_key(""), 0xf52a_15e9_a9b5_e89b);
/// ```
pub fn hash_key(key: &str) -> u64 {
    splitmix64_finalise(fnv1a64(key.as_bytes()))
}

/// Plain 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64 finaliser (Stafford's Mix13): a bijection on `u64` with full
/// avalanche.
fn splitmix64_finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The address under which server `host:port` is known on a ring:
/// `HOST:PORT`, or `[HOST]:PORT` when the host is an IPv6 literal (contains
/// `:`) not already in brackets.
///
/// ```
/// assert_eq!(chat::ring::server_address("127.0.0.1", 6000), "127.0.0.1:6000");
/// assert_eq!(chat::ring::server_address("::1", 6000), "[::1]:6000");
/// ```
pub fn server_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a [`HashRing`] operation was refused. The ring is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// The server (its `HOST:PORT`) is already on the ring.
    AlreadyPresent(String),
    /// The server (its `HOST:PORT`) is not on the ring.
    NotFound(String),
    /// A server needs at least one virtual node.
    ZeroVirtualNodes,
    /// More than [`MAX_VIRTUAL_NODES`] virtual nodes were asked for.
    TooManyVirtualNodes(u32),
    /// The host is empty or contains whitespace or `#`.
    InvalidHost(String),
    /// Port 0 cannot be a server's port.
    InvalidPort,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::AlreadyPresent(addr) => write!(f, "server {addr} is already on the ring"),
            RingError::NotFound(addr) => write!(f, "server {addr} is not on the ring"),
            RingError::ZeroVirtualNodes => {
                write!(f, "a server needs at least 1 virtual node")
            }
            RingError::TooManyVirtualNodes(n) => {
                write!(f, "{n} virtual nodes is too many (at most {MAX_VIRTUAL_NODES})")
            }
            RingError::InvalidHost(host) => {
                write!(f, "invalid host {host:?} (must be non-empty, without whitespace or '#')")
            }
            RingError::InvalidPort => write!(f, "port 0 is not a valid server port"),
        }
    }
}

impl std::error::Error for RingError {}

/// One real server on the ring.
#[derive(Debug, Clone)]
struct Server {
    /// `HOST:PORT`, see [`server_address`].
    addr: String,
    vnodes: u32,
}

/// A consistent hash ring of servers `HOST:PORT`, each with its own number of
/// virtual nodes. See the [module documentation](self) for the exact hashing.
///
/// Adding or removing a server only moves the keys that land on (or were on)
/// that server's points; every other key keeps its server.
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    /// Real servers, in the order they were added.
    servers: Vec<Server>,
    /// Ring points `(position, index into servers)`, sorted by position
    /// (ties by server address).
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds server `host:port` with `vnodes` virtual nodes (ring points).
    ///
    /// # Errors
    ///
    /// Fails, leaving the ring unchanged, if the server is already present,
    /// if `vnodes` is 0 or above [`MAX_VIRTUAL_NODES`], if `port` is 0, or if
    /// `host` is empty or contains whitespace or `#`.
    pub fn add(&mut self, host: &str, port: u16, vnodes: u32) -> Result<(), RingError> {
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '#') {
            return Err(RingError::InvalidHost(host.to_string()));
        }
        if port == 0 {
            return Err(RingError::InvalidPort);
        }
        if vnodes == 0 {
            return Err(RingError::ZeroVirtualNodes);
        }
        if vnodes > MAX_VIRTUAL_NODES {
            return Err(RingError::TooManyVirtualNodes(vnodes));
        }
        let addr = server_address(host, port);
        if self.index_of(&addr).is_some() {
            return Err(RingError::AlreadyPresent(addr));
        }
        let index = self.servers.len();
        self.points.reserve(vnodes as usize);
        for i in 0..vnodes {
            self.points.push((hash_key(&format!("{addr}#{i}")), index));
        }
        self.servers.push(Server { addr, vnodes });
        let servers = &self.servers;
        self.points.sort_unstable_by(|a, b| (a.0, &servers[a.1].addr).cmp(&(b.0, &servers[b.1].addr)));
        Ok(())
    }

    /// Removes server `host:port` and all its virtual nodes.
    ///
    /// # Errors
    ///
    /// Fails with [`RingError::NotFound`], leaving the ring unchanged, if the
    /// server is not on the ring.
    pub fn remove(&mut self, host: &str, port: u16) -> Result<(), RingError> {
        let addr = server_address(host, port);
        let index = self.index_of(&addr).ok_or(RingError::NotFound(addr))?;
        self.servers.remove(index);
        self.points.retain(|&(_, s)| s != index);
        for point in &mut self.points {
            if point.1 > index {
                point.1 -= 1;
            }
        }
        Ok(())
    }

    /// The server (`HOST:PORT`) that `key` maps to: the owner of the first
    /// ring point at or after [`hash_key`]`(key)`, wrapping around. `None` if
    /// the ring is empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        let first = *self.points.first()?;
        let position = hash_key(key);
        let at = self.points.partition_point(|&(p, _)| p < position);
        let (_, server) = self.points.get(at).copied().unwrap_or(first);
        Some(&self.servers[server].addr)
    }

    /// Number of virtual nodes of server `host:port`, or `None` if it is not
    /// on the ring.
    pub fn virtual_nodes(&self, host: &str, port: u16) -> Option<u32> {
        let index = self.index_of(&server_address(host, port))?;
        Some(self.servers[index].vnodes)
    }

    /// Number of real servers on the ring.
    pub fn real_nodes(&self) -> usize {
        self.servers.len()
    }

    /// Number of ring points: the sum of every server's virtual nodes.
    pub fn all_nodes(&self) -> usize {
        self.points.len()
    }

    /// `true` if no server is on the ring.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The servers (`HOST:PORT`) with their virtual node counts, in the order
    /// they were added.
    pub fn servers(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.servers.iter().map(|s| (s.addr.as_str(), s.vnodes))
    }

    /// Every ring point as `(position, server)`, in ring order (ascending
    /// position).
    pub fn points(&self) -> impl Iterator<Item = (u64, &str)> + '_ {
        self.points.iter().map(|&(p, s)| (p, self.servers[s].addr.as_str()))
    }

    /// How many of `keys` map to each server: one `(server, count)` per
    /// server, in the order the servers were added, including servers that got
    /// no key. Empty if the ring is empty.
    pub fn distribution(&self, keys: impl Iterator<Item = String>) -> Vec<(String, usize)> {
        let mut counts = vec![0usize; self.servers.len()];
        if !self.points.is_empty() {
            for key in keys {
                let position = hash_key(&key);
                let at = self.points.partition_point(|&(p, _)| p < position);
                let (_, server) = self.points.get(at).copied().unwrap_or(self.points[0]);
                counts[server] += 1;
            }
        }
        self.servers.iter().zip(counts).map(|(s, n)| (s.addr.clone(), n)).collect()
    }

    fn index_of(&self, addr: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.addr == addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_parts_match_reference_vectors() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // First output of the SplitMix64 generator seeded with 0.
        assert_eq!(splitmix64_finalise(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(hash_key("a"), splitmix64_finalise(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn empty_ring() {
        let ring = HashRing::new();
        assert!(ring.is_empty());
        assert_eq!(ring.get("10.0.0.1:5555"), None);
        assert_eq!(ring.real_nodes(), 0);
        assert_eq!(ring.all_nodes(), 0);
        assert_eq!(ring.points().count(), 0);
        assert!(ring.distribution(vec!["a".to_string()].into_iter()).is_empty());
    }

    #[test]
    fn add_counts_and_points() {
        let mut ring = HashRing::new();
        ring.add("127.0.0.1", 6000, 100).unwrap();
        ring.add("127.0.0.1", 6002, 50).unwrap();
        assert_eq!(ring.real_nodes(), 2);
        assert_eq!(ring.all_nodes(), 150);
        assert_eq!(ring.virtual_nodes("127.0.0.1", 6000), Some(100));
        assert_eq!(ring.virtual_nodes("127.0.0.1", 6002), Some(50));
        assert_eq!(ring.virtual_nodes("127.0.0.1", 6004), None);
        let points: Vec<_> = ring.points().collect();
        assert_eq!(points.len(), 150);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(points.iter().filter(|p| p.1 == "127.0.0.1:6002").count(), 50);
        // The points are exactly the hashes of "HOST:PORT#i".
        assert!(points.contains(&(hash_key("127.0.0.1:6000#99"), "127.0.0.1:6000")));
        assert!(points.contains(&(hash_key("127.0.0.1:6002#0"), "127.0.0.1:6002")));
    }

    #[test]
    fn add_errors_leave_ring_unchanged() {
        let mut ring = HashRing::new();
        ring.add("127.0.0.1", 6000, 10).unwrap();
        assert_eq!(ring.add("127.0.0.1", 6000, 20), Err(RingError::AlreadyPresent("127.0.0.1:6000".into())));
        assert_eq!(ring.add("127.0.0.1", 6001, 0), Err(RingError::ZeroVirtualNodes));
        assert_eq!(
            ring.add("127.0.0.1", 6001, MAX_VIRTUAL_NODES + 1),
            Err(RingError::TooManyVirtualNodes(MAX_VIRTUAL_NODES + 1))
        );
        assert_eq!(ring.add("127.0.0.1", 0, 10), Err(RingError::InvalidPort));
        assert!(matches!(ring.add("", 6001, 10), Err(RingError::InvalidHost(_))));
        assert!(matches!(ring.add("a b", 6001, 10), Err(RingError::InvalidHost(_))));
        assert!(matches!(ring.add("a#1", 6001, 10), Err(RingError::InvalidHost(_))));
        assert_eq!(ring.real_nodes(), 1);
        assert_eq!(ring.all_nodes(), 10);
        assert_eq!(ring.virtual_nodes("127.0.0.1", 6000), Some(10));
    }

    #[test]
    fn remove_and_errors() {
        let mut ring = HashRing::new();
        ring.add("127.0.0.1", 6000, 10).unwrap();
        ring.add("127.0.0.1", 6002, 20).unwrap();
        ring.add("127.0.0.1", 6004, 30).unwrap();
        assert_eq!(ring.remove("127.0.0.1", 6001), Err(RingError::NotFound("127.0.0.1:6001".into())));
        ring.remove("127.0.0.1", 6002).unwrap();
        assert_eq!(ring.real_nodes(), 2);
        assert_eq!(ring.all_nodes(), 40);
        assert_eq!(ring.virtual_nodes("127.0.0.1", 6002), None);
        assert_eq!(ring.virtual_nodes("127.0.0.1", 6004), Some(30));
        assert!(ring.points().all(|(_, s)| s != "127.0.0.1:6002"));
        assert_eq!(ring.points().filter(|p| p.1 == "127.0.0.1:6004").count(), 30);
        assert_eq!(ring.remove("127.0.0.1", 6002), Err(RingError::NotFound("127.0.0.1:6002".into())));
        // Re-adding after removal works and gives the same points back.
        ring.add("127.0.0.1", 6002, 20).unwrap();
        assert_eq!(ring.all_nodes(), 60);
        ring.remove("127.0.0.1", 6000).unwrap();
        ring.remove("127.0.0.1", 6002).unwrap();
        ring.remove("127.0.0.1", 6004).unwrap();
        assert!(ring.is_empty());
        assert_eq!(ring.all_nodes(), 0);
        assert_eq!(ring.get("x"), None);
    }

    #[test]
    fn get_follows_first_point_at_or_after_key_and_wraps() {
        let mut ring = HashRing::new();
        ring.add("10.0.0.1", 7000, 8).unwrap();
        ring.add("10.0.0.2", 7000, 8).unwrap();
        let points: Vec<(u64, String)> = ring.points().map(|(p, s)| (p, s.to_string())).collect();
        for i in 0..2000 {
            let key = format!("172.16.{}.{}:{}", i / 256, i % 256, 40000 + i);
            let h = hash_key(&key);
            let expected = points.iter().find(|(p, _)| *p >= h).unwrap_or(&points[0]).1.as_str();
            assert_eq!(ring.get(&key), Some(expected), "key {key}");
        }
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = HashRing::new();
        let mut b = HashRing::new();
        for port in [6000, 6001, 6002, 6003] {
            a.add("127.0.0.1", port, 40).unwrap();
        }
        for port in [6003, 6001, 6000, 6002] {
            b.add("127.0.0.1", port, 40).unwrap();
        }
        assert!(a.points().eq(b.points()));
        for i in 0..1000 {
            let key = format!("k{i}");
            assert_eq!(a.get(&key), b.get(&key));
        }
    }

    #[test]
    fn distribution_counts_every_key_once() {
        let mut ring = HashRing::new();
        ring.add("127.0.0.1", 6000, 160).unwrap();
        ring.add("127.0.0.1", 6002, 160).unwrap();
        let keys = (0..1000).map(|i| format!("10.0.{}.{}:5555", i / 256, i % 256));
        let dist = ring.distribution(keys.clone());
        assert_eq!(dist.len(), 2);
        assert_eq!(dist[0].0, "127.0.0.1:6000");
        assert_eq!(dist[1].0, "127.0.0.1:6002");
        assert_eq!(dist.iter().map(|d| d.1).sum::<usize>(), 1000);
        let on_first = keys.filter(|k| ring.get(k) == Some("127.0.0.1:6000")).count();
        assert_eq!(dist[0].1, on_first);
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let mut ring = HashRing::new();
        ring.add("::1", 6000, 4).unwrap();
        assert_eq!(ring.get("k"), Some("[::1]:6000"));
        assert_eq!(ring.virtual_nodes("::1", 6000), Some(4));
        assert_eq!(ring.virtual_nodes("[::1]", 6000), Some(4));
        assert!(matches!(ring.add("[::1]", 6000, 4), Err(RingError::AlreadyPresent(_))));
    }

    #[test]
    fn errors_display() {
        assert_eq!(RingError::AlreadyPresent("h:1".into()).to_string(), "server h:1 is already on the ring");
        assert_eq!(RingError::NotFound("h:1".into()).to_string(), "server h:1 is not on the ring");
        assert!(RingError::ZeroVirtualNodes.to_string().contains("at least 1"));
    }
}
