//! The contract between the revrepl reader and writer (DESIGN §4).
//!
//! - [`record`]: one line of a window file — one mod of a Spanner data-change record.
//! - [`timestamp`] and [`window`]: nanosecond commit timestamps and epoch-aligned windows.
//! - [`naming`]: `<shard>/<start>-<end>-pane-0-last-0-of-1.txt` object names and `skip/`.
//! - [`shard`]: validated logical shard ids.
//! - [`codec`]: the deterministic window-file encoder and the streaming decoder.
//! - [`buffer`]: where window files live — a GCS bucket or a local directory.
//! - [`retry`]: error classes and the one retry helper with jittered backoff.

pub mod buffer;
pub mod codec;
pub mod naming;
pub mod record;
pub mod retry;
pub mod shard;
pub mod timestamp;
pub mod window;

pub use buffer::{BufferError, BufferStore, PutOutcome};
pub use codec::{
    DecodeError, LineFields, WindowFileDecoder, WindowFileEncoder, decode_window_file,
};
pub use naming::{Destination, WindowFileName};
pub use record::{ChangeRecord, Mod, ModType, compare_sequences, sort_in_commit_order};
pub use retry::{Backoff, Classify, ErrorClass, with_backoff};
pub use shard::{ShardId, ShardIdError};
pub use timestamp::Timestamp;
pub use window::{Window, WindowDuration};
