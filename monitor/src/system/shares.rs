//! Bounded shares of a resource by holder: how many connections one uid
//! (or one peer address) holds at once, so that no single local user can
//! take every slot from everyone else.
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

/// What each holder holds now.
pub struct Shares<K> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    per_holder: usize,
}

impl<K: Hash + Eq + Copy> Shares<K> {
    pub fn new(per_holder: usize) -> Self {
        Self {
            held: Arc::default(),
            per_holder,
        }
    }

    pub fn per_holder(&self) -> usize {
        self.per_holder
    }

    /// One more for `holder`, given back when the [`Share`] drops; None
    /// when it holds its whole share already.
    pub fn take(&self, holder: K) -> Option<Share<K>> {
        let mut counts = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(holder).or_default();
        if *count >= self.per_holder {
            return None;
        }
        *count += 1;
        Some(Share {
            held: self.held.clone(),
            holder,
        })
    }
}

/// One unit of a holder's share.
pub struct Share<K: Hash + Eq + Copy> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    holder: K,
}

impl<K: Hash + Eq + Copy> Drop for Share<K> {
    fn drop(&mut self) {
        let mut counts = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.holder) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gets_its_share_and_no_more_and_gets_it_back() {
        let shares = Shares::new(2);
        let (a, b) = (shares.take(1000).unwrap(), shares.take(1000).unwrap());
        assert!(shares.take(1000).is_none());
        assert!(
            shares.take(1001).is_some(),
            "another holder is not affected"
        );
        drop(a);
        let c = shares.take(1000).expect("given back on drop");
        drop((b, c));
        assert!(shares.held.lock().unwrap().is_empty());
    }
}
