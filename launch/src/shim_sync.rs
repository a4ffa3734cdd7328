//! The shim threads' shared-state helpers: a lock that outlives a panicked holder, and a
//! wait on a condition variable until a condition holds or a deadline passes.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Locks `m`; a holder that panicked leaves the state as it was (the shim's counts and
/// queues stay valid between their updates), so the lock is taken anyway.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `cv` until `done` holds for the state or `deadline` passes; returns the guard
/// and whether `done` held.
pub fn wait_until<'a, T>(
    mut guard: MutexGuard<'a, T>,
    cv: &Condvar,
    deadline: Instant,
    done: impl Fn(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while !done(&guard) {
        let now = Instant::now();
        if now >= deadline {
            return (guard, false);
        }
        guard = cv
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    (guard, true)
}
