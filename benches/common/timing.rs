//! Timing a GPU step the way every DiT bench reports it.

use std::time::Instant;

use anyhow::Result;
use videosdgx::runtime::accel::{allocator_stats, reset_peak};

/// Runs `step` once to warm up, then twice timed: mean seconds, peak GPU bytes of the timed
/// runs, and the warm-up's result.
pub fn timed_steps<T>(step: impl FnMut() -> Result<T>) -> Result<(f64, u64, T)> {
    timed_reps(2, step)
}

/// [`timed_steps`] with `reps` timed runs.
pub fn timed_reps<T>(reps: u32, mut step: impl FnMut() -> Result<T>) -> Result<(f64, u64, T)> {
    let first = step()?;
    tch::Cuda::synchronize(0);
    reset_peak(0);
    let start = Instant::now();
    for _ in 0..reps {
        drop(step()?);
    }
    tch::Cuda::synchronize(0);
    let peak = allocator_stats(0).map_or(0, |s| s.peak_allocated);
    Ok((start.elapsed().as_secs_f64() / reps as f64, peak, first))
}
