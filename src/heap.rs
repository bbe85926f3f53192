//! The daemon's heap, kept close to what it holds (glibc's malloc; elsewhere these do
//! nothing). A lab of a thousand VMs deleted leaves free memory that glibc keeps by
//! default; a desktop service should give it back.

/// One malloc arena for the whole process: the threads that write records (tokio's
/// blocking pool) would otherwise each get an arena of their own, whose free memory stays.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the heap's free pages to the kernel, after a VM is deleted.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
