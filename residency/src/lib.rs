//! Gives the kernel back the pages of code a long-running process ran once.
//!
//! Why: the kernel maps a program's code into a process as it runs it, and with fault-around
//! (`fault_around_bytes`, 64 KiB by default) every page executed brings up to fifteen neighbours
//! already in the page cache with it. A daemon's start-up (argument parsing, the
//! YAML parser, building every backend) runs through much of its code exactly once, and those
//! pages stay in its resident set for as long as it lives: Hecate's daemon held 11 MiB after
//! starting, of which its watch loop uses about 4.
//!
//! How: `madvise(MADV_DONTNEED)` over every segment the loader mapped without write permission
//! (code and read-only data) in the program and its shared libraries. For a private file mapping
//! that was never written this removes only the page-table entries: the pages stay in the page
//! cache, clean and the first the kernel reclaims, and the next access maps them again with a
//! minor fault. What the process sees does not change. Anything that may have been written is
//! left alone, since dropping a written private page brings back the file's bytes: writable
//! segments (RELRO among them: relocated at load, read-only afterwards) and whole objects with
//! text relocations.

use std::io;

/// What one release did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Read-only segments advised.
    pub segments: usize,
    /// The address space they cover, in bytes (resident or not).
    pub bytes: usize,
}

/// Drops this process's mappings of code and read-only data it is not running now; the pages it
/// goes on using come back on their next access. Call it when start-up (or any rarely run work,
/// such as a shutdown run) is over. Safe to call at any time from any thread.
///
/// # Errors
/// The first `madvise` that failed (for instance `EINVAL` when memory is locked with
/// `mlockall`); the segments before it were released.
pub fn release_code_pages() -> io::Result<Released> {
    imp::release_code_pages()
}

/// This process's resident set in bytes (`/proc/self/statm`), `None` where it cannot be read.
#[must_use]
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(imp::page_size() as u64)
}

/// The whole pages inside `[start, end)`: a segment's first and last pages may be shared with
/// its neighbours in the file, so only what lies wholly inside is advised.
fn whole_pages(start: usize, end: usize, page: usize) -> Option<(usize, usize)> {
    if page == 0 || !page.is_power_of_two() {
        return None;
    }
    let first = start.checked_add(page - 1)? & !(page - 1);
    let last = end & !(page - 1);
    (first < last).then_some((first, last))
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::{CStr, c_int, c_void};
    use std::io;

    use super::{Released, whole_pages};

    /// Dynamic-section tags (`elf.h`): the end of the section, text relocations and the flags word
    /// with its text-relocation bit.
    const DT_NULL: usize = 0;
    const DT_TEXTREL: usize = 22;
    const DT_FLAGS: usize = 30;
    const DF_TEXTREL: usize = 0x4;

    pub(super) fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096)
    }

    pub(super) fn release_code_pages() -> io::Result<Released> {
        let page = page_size();
        let mut released = Released::default();
        for (start, end) in read_only_segments() {
            let Some((first, last)) = whole_pages(start, end, page) else { continue };
            // SAFETY: [first, last) lies inside a PT_LOAD segment the loader mapped without write
            // permission from an object without text relocations, so no page in it was ever
            // written and each is the file's own. MADV_DONTNEED on such a private file mapping
            // only removes page-table entries; the next access, from any thread, maps the same
            // bytes again. No Rust reference is invalidated and nothing observable changes.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::madvise(first as *mut c_void, last - first, libc::MADV_DONTNEED) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            released.segments += 1;
            released.bytes += last - first;
        }
        Ok(released)
    }

    /// `[start, end)` of every loaded segment mapped without write permission, in objects backed
    /// by a file (the program and its libraries, not the vDSO) without text relocations.
    pub(super) fn read_only_segments() -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        // SAFETY: `collect` reads only what the loader passes it for the duration of each call,
        // and `data` is `out`, which outlives the call and is not otherwise touched meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            libc::dl_iterate_phdr(Some(collect), (&raw mut out).cast());
        }
        out
    }

    /// `dl_iterate_phdr`'s callback: one loaded object. Never unwinds (no panicking operation).
    #[allow(unsafe_code)]
    unsafe extern "C" fn collect(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid `info` for this call, and `data` is the
        // `Vec` `read_only_segments` passed, borrowed by no one else while it runs.
        let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<(usize, usize)>>()) };
        // The program itself has an empty name; the vDSO a bare one: it is the kernel's, not ours.
        let named_file = info.dlpi_name.is_null() || {
            // SAFETY: a non-null dlpi_name is a NUL-terminated string that lives as long as the object.
            let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes();
            name.is_empty() || name.starts_with(b"/")
        };
        if !named_file || info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: the loader's program headers for this object: dlpi_phnum entries at dlpi_phdr.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr as usize;
        if headers.iter().any(|h| {
            h.p_type == libc::PT_DYNAMIC
                && has_text_relocations(base.wrapping_add(h.p_vaddr as usize), h.p_memsz as usize)
        }) {
            return 0;
        }
        for h in headers.iter().filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0) {
            let start = base.wrapping_add(h.p_vaddr as usize);
            out.push((start, start.saturating_add(h.p_memsz as usize)));
        }
        0
    }

    /// Whether the dynamic section at `addr` (`len` bytes, mapped by the loader) asks for text
    /// relocations, which write into read-only segments at load.
    fn has_text_relocations(addr: usize, len: usize) -> bool {
        let entries = len / std::mem::size_of::<[usize; 2]>();
        (0..entries)
            .map(|i| {
                // SAFETY: the loader mapped the PT_DYNAMIC segment readable for as long as the
                // object is loaded; its entries are (tag, value) pairs of the word size, aligned.
                #[allow(unsafe_code)]
                unsafe {
                    std::ptr::read((addr as *const [usize; 2]).add(i))
                }
            })
            .take_while(|[tag, _]| *tag != DT_NULL)
            .any(|[tag, value]| tag == DT_TEXTREL || (tag == DT_FLAGS && value & DF_TEXTREL != 0))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use super::Released;

    pub(super) fn page_size() -> usize {
        4096
    }

    pub(super) fn release_code_pages() -> io::Result<Released> {
        Ok(Released::default())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::hint::black_box;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A pointer the loader relocates at start (PIE): it lives in RELRO, written once, then
    /// read-only. Released by mistake, it would point at its unrelocated file offset.
    static GREETING: &str = "the loader relocated me";
    /// Plain writable data.
    static COUNTER: AtomicUsize = AtomicUsize::new(7);

    #[test]
    fn whole_pages_round_inward() {
        assert_eq!(whole_pages(0x1000, 0x3000, 0x1000), Some((0x1000, 0x3000)));
        assert_eq!(whole_pages(0x1001, 0x3fff, 0x1000), Some((0x2000, 0x3000)));
        assert_eq!(whole_pages(0x1001, 0x1fff, 0x1000), None);
        assert_eq!(whole_pages(0x2000, 0x1000, 0x1000), None);
        assert_eq!(whole_pages(usize::MAX - 10, usize::MAX, 0x1000), None);
        assert_eq!(whole_pages(0, 0x1000, 0), None);
        assert_eq!(whole_pages(0, 0x1000, 3000), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_read_only_segments_are_chosen() {
        let segments = imp::read_only_segments();
        let inside = |addr: usize| segments.iter().any(|(s, e)| (*s..*e).contains(&addr));
        // This very function's code is in one; the relocated pointer and writable data are not.
        assert!(inside(only_read_only_segments_are_chosen as *const () as usize), "{segments:x?}");
        assert!(!inside(&raw const GREETING as usize), "RELRO chosen: {segments:x?}");
        assert!(!inside(&raw const COUNTER as usize), "writable data chosen: {segments:x?}");
        // The C library's code too (a shared object found by path).
        assert!(inside(libc::getpid as *const () as usize), "{segments:x?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_come_back_unchanged() {
        COUNTER.fetch_add(1, Ordering::SeqCst);
        let before = resident_bytes().unwrap();
        let released = release_code_pages().unwrap();
        let after = resident_bytes().unwrap();
        assert!(released.segments >= 2 && released.bytes > 0, "{released:?}");
        // The test harness and the C library were mapped in; now they are not.
        assert!(after < before, "resident {before} -> {after} bytes");
        // Code runs, relocated pointers still point where they did, written data kept its value.
        assert_eq!(black_box(GREETING), "the loader relocated me");
        assert_eq!(COUNTER.load(Ordering::SeqCst), 8);
        assert_eq!(format!("{:?}", black_box([1.5_f64, 2.0])), "[1.5, 2.0]");
        // And again: releasing is idempotent.
        release_code_pages().unwrap();
        assert_eq!(black_box(GREETING).len(), 23);
    }
}
