//! The process's allocator settings: glibc's `malloc` on Linux, tuned so
//! that peak RSS follows what is in use, not what the allocator keeps
//! (issue 17: import's peak at 10,000 references).
//!
//! Three settings, each measured on the benchmark's 10,000-reference
//! import (docs/benchmarks-journal.md, "The allocator keeps what was freed"):
//!
//! - **Buffers of a MiB or more** (upload chunks, blobs read ahead) come
//!   from and go back to the kernel (`M_MMAP_THRESHOLD`). glibc would
//!   otherwise raise its mmap threshold after the first such buffer is
//!   freed and serve later ones from per-thread heaps that keep their pages.
//! - **At most two arenas** (`M_ARENA_MAX`): glibc gives each thread that
//!   allocates its own arena, up to 8 per core, and each keeps the pages of
//!   what was freed in it. ferry's threads (the runtime's workers, the
//!   reader, the decompressor) share two. A `MALLOC_ARENA_MAX` or
//!   `GLIBC_TUNABLES` in the environment is left to decide instead.
//! - **Freed pages go back every second** (`malloc_trim`, on a thread of
//!   its own): glibc returns only the top of a heap by itself, so pages
//!   freed in its middle (the plan's transient tables, the short-lived
//!   buffers of 20,000 small uploads) stay resident, and RSS climbed by
//!   about 8 MB through the upload phase while the heap in use stayed flat.
//!
//! musl's allocator maps large blocks and keeps no per-thread arenas; on
//! targets other than Linux with glibc nothing here runs.

/// Applies the settings; called once in `main`, before the runtime starts
/// its threads.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::tune();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::time::Duration;

    /// Blocks of this size or more are mapped on their own.
    const MMAP_THRESHOLD: libc::c_int = 1 << 20;
    /// The most arenas the threads share.
    const ARENA_MAX: libc::c_int = 2;
    /// How often freed pages are handed back.
    const TRIM_EVERY: Duration = Duration::from_secs(1);

    pub(super) fn tune() {
        set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        let user_decides = ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !user_decides {
            set(libc::M_ARENA_MAX, ARENA_MAX);
        }
        start_trimmer();
    }

    fn set(param: libc::c_int, value: libc::c_int) {
        #[allow(unsafe_code, reason = "mallopt has no safe wrapper; see SAFETY")]
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread starts.
        let ok = unsafe { libc::mallopt(param, value) };
        if ok != 1 {
            tracing::debug!("mallopt({param}, {value}) was refused");
        }
    }

    /// Hands the pages of freed memory back to the kernel, in every arena.
    pub(super) fn trim_now() {
        #[allow(unsafe_code, reason = "malloc_trim has no safe wrapper; see SAFETY")]
        // SAFETY: malloc_trim takes each arena's lock and releases whole
        // free pages only; it is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// A thread that trims every [`TRIM_EVERY`] for as long as the process
    /// runs. Without it ferry works as before, only with a higher RSS.
    fn start_trimmer() {
        let started = std::thread::Builder::new()
            .name("ferry-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                trim_now();
            });
        if let Err(e) = started {
            tracing::debug!("the allocator's trimming thread did not start: {e}");
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// This process's resident set, in kB.
        fn rss_kb() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }

        #[test]
        fn trimming_hands_back_the_pages_freed_in_the_middle_of_a_heap() {
            // 64 MiB in 16 KiB blocks (below the mmap threshold, so they
            // come from the heap), every block written to; then all but
            // every 64th block freed, and a last block kept above them all
            // so that glibc's own trimming of the heap's top cannot
            // release anything.
            let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![(i as u8) | 1; 16 << 10]).collect();
            let top = vec![1u8; 16 << 10];
            let kept: Vec<Vec<u8>> = blocks
                .into_iter()
                .enumerate()
                .filter_map(|(i, b)| (i % 64 == 0).then_some(b))
                .collect();
            let before = rss_kb();
            trim_now();
            let after = rss_kb();
            assert_eq!(kept.len(), 64);
            assert_eq!(top[0], 1);
            // 63 of every 64 blocks, about 63 MiB, were freed in the middle
            // of the heap: at least half of that goes back.
            assert!(
                before.saturating_sub(after) >= 32 << 10,
                "RSS {before} kB before trimming, {after} kB after"
            );
        }

        #[test]
        fn the_trimming_thread_runs_beside_the_program() {
            let names = || -> Vec<String> {
                std::fs::read_dir("/proc/self/task")
                    .unwrap()
                    .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
                    .map(|n| n.trim().to_string())
                    .collect()
            };
            assert!(!names().iter().any(|n| n == "ferry-trim"));
            tune();
            // The new thread names itself as it starts: wait for it (at
            // most 10 s, a condition, not a timing).
            for _ in 0..200 {
                if names().iter().any(|n| n == "ferry-trim") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("no thread named ferry-trim: {:?}", names());
        }
    }
}
