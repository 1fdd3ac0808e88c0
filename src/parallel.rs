//! Spreading independent work over threads: a sink range often holds many small objects
//! (one per partition folder) encoded and written independently, and a crawl reads many
//! object footers.

use std::thread;

/// At most this many threads per call for work that keeps a core busy, whatever the
/// machine: each holds a whole encoded object.
const MAX_THREADS: usize = 8;

/// `f` applied to every item, on up to one thread per core (at most `MAX_THREADS`),
/// results in item order: for work that keeps a core busy.
pub fn map<'a, T: Sync, R: Send>(items: &'a [T], f: impl Fn(&'a T) -> R + Sync) -> Vec<R> {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    map_on(cores.min(MAX_THREADS), items, f)
}

/// `f` applied to every item on up to `threads` threads, results in item order: for work
/// that mostly waits (file syncs), where threads beyond the cores still help.
pub fn map_on<'a, T: Sync, R: Send>(
    threads: usize,
    items: &'a [T],
    f: impl Fn(&'a T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_item_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            super::map(&items, |x| x * 2),
            (0..1000).map(|x| x * 2).collect::<Vec<_>>()
        );
        assert!(super::map(&[] as &[u32], |x| *x).is_empty());
    }
}
