//! The slots one search may look at, as a bitset: built once per search from the viewer's
//! scope, then tested for every posting and walked by the dense scan (one bit per slot, so
//! 100,000 slots take 12.5 KiB and stay in the first-level cache).

/// A set of slots.
#[derive(Debug)]
pub(crate) struct Visible {
    words: Vec<u64>,
}

impl Visible {
    /// The empty set over `slots` slots.
    pub(crate) fn new(slots: usize) -> Visible {
        Visible {
            words: vec![0; slots.div_ceil(64)],
        }
    }

    /// Adds `slot` (one below the size given to [`Visible::new`]; others are ignored).
    pub(crate) fn insert(&mut self, slot: u32) {
        if let Some(w) = self.words.get_mut(slot as usize / 64) {
            *w |= 1 << (slot % 64);
        }
    }

    /// Whether `slot` is in the set.
    pub(crate) fn contains(&self, slot: u32) -> bool {
        self.words
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// The slots in the set, in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().zip(0u32..).flat_map(|(&w, i)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(i * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_what_was_put_in_and_walks_it_in_order() {
        let mut v = Visible::new(200);
        for s in [130, 0, 63, 64, 199, 5000] {
            v.insert(s);
        }
        assert!(v.contains(0) && v.contains(63) && v.contains(64) && v.contains(199));
        assert!(!v.contains(1) && !v.contains(5000) && !v.contains(u32::MAX));
        assert_eq!(v.iter().collect::<Vec<_>>(), [0, 63, 64, 130, 199]);
    }
}
