//! The queue between the workers and the access log's writer thread.
//!
//! A worker formats a line into a reused per-thread buffer, then appends its bytes to the
//! shared pending batch under a mutex held only for that copy: no allocation per line, and no
//! memory handed from one thread to another (which made glibc's allocator lock and consolidate
//! when each line was a `String` sent over a channel). The writer swaps the batch for an empty
//! one, writes it to stdout in one call, and waits [`GATHER`] before taking the next, so a busy
//! proxy wakes it a few hundred times a second; an idle one lets it sleep on a condition
//! variable, signalled only by the line that finds the batch empty and the writer asleep.
//! The batch holds at most `capacity` lines: past that (stdout stalls or cannot keep up) a line
//! is dropped and counted, and the worker never waits for the writer.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::metrics as m;

/// How long the writer lets lines gather after writing a batch.
pub const GATHER: Duration = Duration::from_millis(2);

/// A batch's buffer is shrunk back to this after a burst made it larger than [`SHRINK_OVER`].
const BATCH_BYTES: usize = 64 * 1024;
/// See [`BATCH_BYTES`].
const SHRINK_OVER: usize = 4 * 1024 * 1024;

/// The pending batch.
struct Batch {
    bytes: Vec<u8>,
    lines: usize,
    /// The writer is waiting on [`Sink::ready`] for a first line.
    writer_waiting: bool,
}

struct Sink {
    batch: Mutex<Batch>,
    ready: Condvar,
    capacity: usize,
    /// False when the writer thread could not start: every line is dropped and counted.
    writing: bool,
    dropped: metrics::Counter,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    /// The line being formatted on this thread, reused from line to line.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// Formats a line with `format` (which must end it with a newline) and hands it to the writer,
/// or drops and counts it when `capacity` lines (used when the writer starts) are already
/// waiting. Never blocks on the writer.
pub fn submit(capacity: usize, format: impl FnOnce(&mut String)) {
    let sink = SINK.get_or_init(|| start(capacity));
    if !sink.writing {
        sink.dropped.increment(1);
        return;
    }
    LINE.with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            // Re-entered while formatting (cannot happen: formatting does not log): drop.
            sink.dropped.increment(1);
            return;
        };
        line.clear();
        format(&mut line);
        let wake = {
            let mut b = sink.lock();
            if b.lines >= sink.capacity {
                drop(b);
                sink.dropped.increment(1);
                return;
            }
            b.bytes.extend_from_slice(line.as_bytes());
            b.lines += 1;
            std::mem::take(&mut b.writer_waiting)
        };
        if wake {
            sink.ready.notify_one();
        }
    });
}

fn start(capacity: usize) -> Sink {
    let dropped = metrics::counter!(m::ACCESS_LOG_DROPPED);
    let spawned = std::thread::Builder::new()
        .name("berth-access-log".into())
        .spawn(write_batches);
    if let Err(e) = &spawned {
        tracing::error!(error = %e, "cannot start the access log writer thread; access log lines will be dropped");
    }
    Sink {
        batch: Mutex::new(Batch {
            bytes: Vec::with_capacity(BATCH_BYTES),
            lines: 0,
            writer_waiting: false,
        }),
        ready: Condvar::new(),
        capacity: capacity.max(1),
        writing: spawned.is_ok(),
        dropped,
    }
}

/// The writer thread: takes the pending batch, writes it to stdout, and waits a little.
fn write_batches() {
    // The thread starts inside `SINK`'s initialisation: wait until it is set.
    let sink = loop {
        if let Some(s) = SINK.get() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let written = metrics::counter!(m::ACCESS_LOG_LINES);
    let mut out = std::io::stdout().lock();
    let mut spare: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    let mut warned = false;
    loop {
        let lines = {
            let mut b = sink.lock();
            while b.lines == 0 {
                b.writer_waiting = true;
                b = sink.ready.wait(b).unwrap_or_else(PoisonError::into_inner);
            }
            b.writer_waiting = false;
            std::mem::swap(&mut b.bytes, &mut spare);
            std::mem::take(&mut b.lines)
        };
        match out.write_all(&spare).and_then(|()| out.flush()) {
            Ok(()) => written.increment(lines as u64),
            Err(e) => {
                sink.dropped.increment(lines as u64);
                if !warned {
                    warned = true;
                    tracing::warn!(error = %e, "cannot write the access log to stdout; its lines are dropped and counted");
                }
            }
        }
        spare.clear();
        if spare.capacity() > SHRINK_OVER {
            spare.shrink_to(BATCH_BYTES);
        }
        std::thread::sleep(GATHER);
    }
}
