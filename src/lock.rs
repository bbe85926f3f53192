//! Mutexes whose data stays consistent even if a holder panicked: every critical section in
//! the daemon is a single insert, remove or write, so a poisoned lock is taken as it is.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
