//! Hash maps for the sample's hot loops, which hash thousands of keys a
//! sample: foldhash is several times faster than the standard SipHash.
//!
//! - [`IdMap`], [`IdSet`]: keyed by kernel ids (cgroup ids, counter
//!   slots), which need no defence against chosen collisions.
//! - [`KeyMap`], [`KeySet`]: keyed by job keys, whose job ids users choose.
//!   foldhash's quality hasher, seeded per process: colliding ids would
//!   have to be chosen without knowing the seed, and the jobs a map holds
//!   are bounded by the per-user caps, so even a full collision costs a
//!   bounded, not an unbounded, slowdown. Maps that grow with what users
//!   send and live long (the socket's per-user buckets) keep SipHash.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
pub type KeyMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
pub type KeySet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;
