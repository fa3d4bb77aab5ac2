//! `he_agg::alloc`'s phases: freed memory stays mapped for reuse within a phase and goes back to
//! the operating system at `release_freed`. One test in its own process: the allocator's options
//! are process-wide.

#[global_allocator]
static GLOBAL: he_agg::alloc::Allocator = he_agg::alloc::Allocator;

/// Resident bytes of this process (`/proc/self/statm`, Linux).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn freed_memory_is_kept_within_a_phase_and_released_between_phases() {
    let Some(start) = resident() else {
        eprintln!("no /proc/self/statm: nothing to measure here");
        return;
    };
    he_agg::alloc::tune_phased();
    const BLOCK: usize = 4 << 20;
    const BLOCKS: usize = 128;
    let total = (BLOCK * BLOCKS) as u64;
    // blocks the size of a model segment's plaintexts, every page written
    let blocks: Vec<Vec<u64>> = (0..BLOCKS).map(|i| vec![i as u64 + 1; BLOCK / 8]).collect();
    let touched = resident().expect("statm");
    assert!(
        touched >= start + total * 9 / 10,
        "{} MiB resident after writing {} MiB (from {} MiB)",
        touched >> 20,
        total >> 20,
        start >> 20
    );
    assert_eq!(
        blocks.iter().map(|b| b[BLOCK / 8 - 1]).sum::<u64>(),
        128 * 129 / 2
    );
    drop(blocks);
    let kept = resident().expect("statm");
    assert!(
        kept >= start + total * 9 / 10,
        "within a phase freed memory stays for reuse: {} MiB resident after freeing, {} MiB before",
        kept >> 20,
        touched >> 20
    );
    he_agg::alloc::release_freed();
    let released = resident().expect("statm");
    assert!(
        released + total * 3 / 4 <= kept,
        "release_freed gave back {} MiB of the {} MiB freed",
        kept.saturating_sub(released) >> 20,
        total >> 20
    );
}
