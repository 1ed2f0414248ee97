//! A value that counts its changes, so a copy of it (the saved job
//! registry) is written again only when it changed. There is no plain
//! mutable access: a change either counts ([`Versioned::edit`]) or says
//! why it does not ([`Versioned::edit_unsaved`]), so none can forget to.
use std::ops::Deref;

#[derive(Debug, Default)]
pub struct Versioned<T> {
    value: T,
    generation: u64,
}

impl<T> Versioned<T> {
    /// Changes with every [`Self::edit`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Mutable access, counted as a change.
    pub fn edit(&mut self) -> &mut T {
        self.generation += 1;
        &mut self.value
    }

    /// Mutable access for changes to what the saved copy does not hold
    /// (the caller says which in a comment): not counted.
    pub fn edit_unsaved(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Deref for Versioned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_is_a_new_generation_and_reads_are_not() {
        let mut value = Versioned::<Vec<u32>>::default();
        let start = value.generation();
        assert!(value.is_empty());
        assert_eq!(value.generation(), start);
        value.edit().push(2);
        let edited = value.generation();
        assert_ne!(edited, start);
        value.edit();
        assert_ne!(value.generation(), edited, "access alone counts");
        let before = value.generation();
        value.edit_unsaved().push(3);
        assert_eq!(value.generation(), before);
        assert_eq!(*value, vec![2, 3]);
    }
}
