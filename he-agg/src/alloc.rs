//! The allocator of HEAL's binaries and benchmarks: mimalloc, a pooling allocator (as SEAL's
//! memory pool), tuned for ciphertexts. A round allocates hundreds of megabytes of polynomials
//! and frees them; with 4 KiB pages every fresh page costs a fault and a zeroing in the kernel
//! (a fifth of the time of `bench_ckks`'s 10 × 1M floats, measured with perf). mimalloc is told
//! to use 2 MiB pages where the kernel offers them (transparent huge pages in `madvise` mode,
//! Linux's default) and to keep freed memory for reuse instead of returning it to the operating
//! system, as SEAL's memory pool does: a process stays at its peak footprint, and the next
//! round's ciphertexts land in pages already mapped. A process whose phases differ in size (a
//! keyholder calibrating, then serving; a benchmark with several key sets) calls
//! [`tune_phased`] and [`release_freed`] between phases instead: within a phase freed memory is
//! reused as above, and what the last phase freed goes back before the next one reads how much
//! memory is available. Returning memory after mimalloc's 1 s delay
//! made every 2-second round of the main job fault its pages in again: 0.60 M page faults per
//! run instead of 0.01 M, and 2–4 s of the kernel zeroing pages (more on a virtual machine whose
//! host reclaims freed memory). A `MIMALLOC_ALLOW_LARGE_OS_PAGES` or `MIMALLOC_PURGE_DELAY`
//! (milliseconds; -1 never) in the environment wins over these choices.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;
//! fn main() { he_agg::alloc::tune(); /* … */ }
//! ```

pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's option numbers (`mi_option_t` in its mimalloc.h, version 3).
const ALLOW_LARGE_OS_PAGES: libmimalloc_sys::mi_option_t = 6;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds freed memory is kept before it goes back to the operating system: never.
pub const PURGE_DELAY_MS: i64 = -1;

/// The purge delay of [`tune_phased`]: an hour, longer than any phase, so freed memory is kept
/// for reuse within a phase. It must be finite: mimalloc marks freed memory for a later purge
/// only when purging is allowed at all, and [`release_freed`] purges what is marked.
pub const PHASED_PURGE_DELAY_MS: i64 = 3_600_000;

/// Sets the options above unless the environment sets them. Call it first thing in `main`;
/// harmless where mimalloc is not the global allocator.
pub fn tune() {
    set_options(PURGE_DELAY_MS);
}

/// [`tune`] for a process that calls [`release_freed`] between its phases.
pub fn tune_phased() {
    set_options(PHASED_PURGE_DELAY_MS);
}

/// Returns what the process freed so far to the operating system (after [`tune_phased`]; after
/// [`tune`] freed memory is never marked for release, so it stays). Measured on a
/// mode (a) ResNet benchmark, 28 November 2026: purging every free instead
/// (`MIMALLOC_PURGE_DELAY=0`) made each model segment encoded per request fault its pages in
/// again, a third of the evaluation's time in the kernel zeroing pages.
pub fn release_freed() {
    // SAFETY: takes no pointer; mimalloc purges only memory no allocation holds.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn set_options(purge_delay_ms: i64) {
    for (option, env, value) in [
        (ALLOW_LARGE_OS_PAGES, "MIMALLOC_ALLOW_LARGE_OS_PAGES", 1),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", purge_delay_ms),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: plain setter of a process-wide option; any value is valid for these two
            // (a negative delay means never).
            unsafe { libmimalloc_sys::mi_option_set(option, value as std::ffi::c_long) };
        }
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes (None where there is no such file).
pub fn available_memory() -> Option<u64> {
    parse_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_options_are_those_tune_sets() {
        super::tune();
        // SAFETY: plain getters.
        let (large, delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(super::ALLOW_LARGE_OS_PAGES),
                libmimalloc_sys::mi_option_get(super::PURGE_DELAY),
            )
        };
        if std::env::var_os("MIMALLOC_ALLOW_LARGE_OS_PAGES").is_none() {
            assert_eq!(large, 1);
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            #[allow(clippy::useless_conversion)] // c_long is i32 on some targets
            let delay = i64::from(delay);
            assert_eq!(delay, super::PURGE_DELAY_MS);
        }
    }
}

#[cfg(test)]
mod meminfo_tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_kilobytes() {
        let text = "MemTotal:       24684132 kB\nMemFree:  1 kB\nMemAvailable:   14555748 kB\n";
        assert_eq!(parse_available(text), Some(14_555_748 * 1024));
        assert_eq!(parse_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_available("MemAvailable: 5 MB\n"), None);
        assert_eq!(parse_available("MemAvailable: lots kB\n"), None);
    }
}
