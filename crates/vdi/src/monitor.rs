//! Progress reporting and cancellation for long operations.

/// Watches a long operation: told of progress, asked whether to stop.
///
/// The engine calls [`Monitor::cancelled`] between blocks and stops with
/// [`crate::VdiError::Cancelled`] when it returns true.
pub trait Monitor {
    /// `done` of `total` units (bytes or blocks, as the operation documents) are finished.
    fn progress(&mut self, done: u64, total: u64) {
        let _ = (done, total);
    }
    /// True when the caller wants the operation to stop.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A monitor that reports nowhere and never cancels.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMonitor;

impl Monitor for NoMonitor {}

/// A monitor built from two closures.
pub struct FnMonitor<P, C> {
    /// Called with (done, total).
    pub progress: P,
    /// Returns true to cancel.
    pub cancelled: C,
}

impl<P: FnMut(u64, u64), C: Fn() -> bool> Monitor for FnMonitor<P, C> {
    fn progress(&mut self, done: u64, total: u64) {
        (self.progress)(done, total)
    }
    fn cancelled(&self) -> bool {
        (self.cancelled)()
    }
}
