//! The daemon's heap, kept close to what it holds (glibc's malloc; elsewhere these do
//! nothing). A lab of a thousand VMs deleted leaves free memory that glibc keeps by
//! default; a desktop service should give it back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One malloc arena for the whole process: the threads that write records (tokio's
/// blocking pool) would otherwise each get an arena of their own, whose free memory stays.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// How long deletions must pause before the heap is trimmed: a trim walks the whole heap,
/// so one per deletion would make each cost what the heap holds (with 10 000 VMs, most of
/// a Delete's time).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Returns the heap's free pages to the kernel once the deletions under way (or whatever
/// else freed much: the VMs loaded at start) have paused for [`SETTLE`]: one trim for a
/// whole lab deleted.
pub fn give_back_soon() {
    static PENDING: AtomicBool = AtomicBool::new(false);
    static LAST: AtomicU64 = AtomicU64::new(0);
    LAST.fetch_add(1, Ordering::Relaxed);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        loop {
            let seen = LAST.load(Ordering::Relaxed);
            tokio::time::sleep(SETTLE).await;
            if LAST.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(give_back).await;
    });
}

/// Returns the heap's free pages to the kernel.
fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
