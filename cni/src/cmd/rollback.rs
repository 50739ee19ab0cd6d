//! Undo steps for a failed ADD, run in reverse order.

/// One undo action; its error is only logged.
type Undo<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;

/// Collects undo actions; they run (last first) when dropped unless the
/// operation succeeded and called [`Rollback::commit`]. Undo failures are
/// logged, never returned: the original error is what the runtime needs.
#[derive(Default)]
pub struct Rollback<'a> {
    steps: Vec<(&'static str, Undo<'a>)>,
}

impl<'a> Rollback<'a> {
    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() -> Result<(), String> + 'a) {
        self.steps.push((what, Box::new(undo)));
    }

    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(e) = undo() {
                tracing::error!("rollback: {what}: {e}");
            }
        }
    }
}
