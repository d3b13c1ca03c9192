//! The parent tree: parent links, `set_parent` with its cycle check.
//!
//! Each coroutine but main has a parent; a child's parent link is a strong handle, so a parent
//! lives at least as long as its children. Where a finished coroutine's result goes — its first
//! live ancestor — is computed by `switch::first_live`, greenlet's walk up the tree.

use super::Coroutine;
use crate::error::Error;

impl Coroutine {
    /// The parent: where this coroutine's return value or panic goes. `None` only for the main
    /// coroutine of a thread.
    pub fn parent(&self) -> Option<Coroutine> {
        self.0.parent_handle()
    }

    /// Makes `p` the parent of this coroutine.
    ///
    /// Fails with [`Error::ParentCycle`] if `p` is this coroutine or one of its descendants,
    /// and with [`Error::WrongThread`] if this is a main coroutine (main has no parent).
    pub fn set_parent(&self, p: &Coroutine) -> Result<(), Error> {
        if self.0.is_main() {
            return Err(Error::WrongThread);
        }
        let mut a = Some(p.clone());
        while let Some(c) = a {
            if c == *self {
                return Err(Error::ParentCycle);
            }
            a = c.parent();
        }
        let old = self.0.parent.replace(Some(p.clone()));
        // Dropping the old link may kill the old parent if it was its last handle: do it after
        // the new link is in place.
        drop(old);
        Ok(())
    }
}
