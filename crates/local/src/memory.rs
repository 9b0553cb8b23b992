//! Large weight buffers backed by transparent huge pages where the system allows it.
//!
//! Generating a token streams every chat weight from memory (92 MiB); in 4 KiB pages that is a
//! TLB miss every 4 KiB. On the 2-core VM, generation at 2 threads swung between ~121 and ~145
//! tok/s from one process to the next; with the weights in 2 MiB pages it varied less and was a
//! few per cent faster (docs/BENCHMARKS.md). Linux backs anonymous memory with huge pages only
//! where a program asks (`/sys/kernel/mm/transparent_hugepage/enabled` is usually `madvise`),
//! and only for pages touched after asking, so the buffer is advised while still empty.
//!
//! The one other `unsafe` in the crate besides [`crate::kernels`]: the `madvise` and
//! `malloc_trim` calls.
#![allow(
    unsafe_code,
    reason = "madvise on memory this module just allocated, and malloc_trim; SAFETY comments at the calls"
)]

/// Huge page size on x86-64 and the usual arm64 configuration.
const HUGE_PAGE: usize = 2 << 20;

/// An empty vector with room for `capacity` values, whose memory the kernel is asked to back
/// with huge pages. Only a hint: where the system does not do it, this is
/// `Vec::with_capacity`.
pub(crate) fn huge_vec<T>(capacity: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(capacity);
    let bytes = capacity.saturating_mul(std::mem::size_of::<T>());
    if bytes >= HUGE_PAGE {
        advise_huge(v.as_ptr().cast::<u8>(), bytes);
    }
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *const u8, len: usize) {
    // Whole huge pages inside the allocation only.
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return;
    }
    // SAFETY: `[start, end)` lies inside the allocation of `len` bytes at `ptr`, which the caller
    // just made and which nothing else references; `start` is page-aligned. MADV_HUGEPAGE only
    // changes how the kernel backs those pages (their contents, here not yet written, are kept),
    // so no value in the program can tell. A failure (huge pages disabled, an old kernel) just
    // leaves normal pages; the return value is ignored on purpose.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *const u8, _len: usize) {}

/// Returns memory freed while loading to the system: [`crate::kernels::Matrix::gather`] copies
/// the layers into one buffer, and the allocator keeps the freed copies (60 MiB for the chat
/// model) unless asked.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` is glibc's own, thread-safe, and only hands pages that no
    // allocation uses back to the kernel; it reads or moves no live memory.
    let _ = unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_vectors_hold_what_is_put_in_them() {
        for n in [0, 1, 1000, (HUGE_PAGE * 3) / 4 + 17] {
            let mut v: Vec<u32> = huge_vec(n);
            assert!(v.capacity() >= n);
            v.extend((0..n).map(|i| i as u32 ^ 0xA5A5));
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 ^ 0xA5A5));
        }
    }
}
