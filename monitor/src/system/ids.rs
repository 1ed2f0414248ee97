//! Maps and sets keyed by kernel ids (cgroup ids, counter slots), which
//! every sample hashes thousands of times: foldhash is several times
//! faster than the standard SipHash, and keys the kernel assigns need no
//! defence against chosen collisions (user-chosen keys, job ids, keep
//! SipHash).
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
