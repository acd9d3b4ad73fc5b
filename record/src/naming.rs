//! Object names of window files: `<shard>/<start>-<end>-pane-0-last-0-of-1.txt` (DESIGN §4).

use std::fmt;

use crate::shard::{SKIP_DIRECTORY, ShardId, ShardIdError};
use crate::timestamp::Timestamp;
use crate::window::Window;

/// The fixed tail of every window-file name: the on-time pane of a one-file window.
const SUFFIX: &str = "-pane-0-last-0-of-1.txt";

/// Which directory of the buffer a window file belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// A logical shard's own directory.
    Shard(ShardId),
    /// `skip/`: records of tables the session file does not know.
    Skip,
}

impl Destination {
    /// The directory name.
    pub fn directory(&self) -> &str {
        match self {
            Self::Shard(shard) => shard.as_str(),
            Self::Skip => SKIP_DIRECTORY,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.directory())
    }
}

/// The name of the file holding one destination's records of one window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowFileName {
    /// The shard (or `skip`) directory.
    pub destination: Destination,
    /// The window the file covers.
    pub window: Window,
}

/// Why a path is not a window-file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The path has no `<directory>/` part.
    #[error("{0:?} is not a window-file name: it has no shard directory")]
    NoDirectory(String),
    /// The directory is not a valid shard id.
    #[error("{path:?} is not a window-file name: {source}")]
    Shard {
        /// The path given.
        path: String,
        /// Why the directory is not a shard id.
        source: ShardIdError,
    },
    /// The file part does not have the `<start>-<end>-pane-0-last-0-of-1.txt` shape.
    #[error("{path:?} is not a window-file name: {reason}")]
    Shape {
        /// The path given.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl WindowFileName {
    /// The name of `destination`'s file for `window`.
    pub fn new(destination: Destination, window: Window) -> Self {
        Self {
            destination,
            window,
        }
    }

    /// The object path relative to the buffer root.
    pub fn path(&self) -> String {
        format!(
            "{}/{}-{}{SUFFIX}",
            self.destination.directory(),
            self.window.start().to_rfc3339_millis(),
            self.window.end().to_rfc3339_millis()
        )
    }

    /// Parses an object path relative to the buffer root.
    pub fn parse(path: &str) -> Result<Self, NameError> {
        let shape = |reason: &str| NameError::Shape {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let (directory, file) = path
            .split_once('/')
            .ok_or_else(|| NameError::NoDirectory(path.to_string()))?;
        let destination = if directory == SKIP_DIRECTORY {
            Destination::Skip
        } else {
            Destination::Shard(ShardId::new(directory).map_err(|source| NameError::Shard {
                path: path.to_string(),
                source,
            })?)
        };
        let bounds = file
            .strip_suffix(SUFFIX)
            .ok_or_else(|| shape("it does not end with -pane-0-last-0-of-1.txt"))?;
        let (start, end) = bounds
            .split_once("Z-")
            .ok_or_else(|| shape("it has no <start>-<end> window bounds"))?;
        let parse = |text: &str, which: &str| {
            Timestamp::parse_rfc3339(text).map_err(|e| shape(&format!("bad window {which}: {e}")))
        };
        let start = parse(&format!("{start}Z"), "start")?;
        let end = parse(end, "end")?;
        let window = Window::from_bounds(start, end)
            .ok_or_else(|| shape("the window ends before it starts"))?;
        let name = Self::new(destination, window);
        // Only the canonical spelling is a name: anything else would not round-trip.
        if name.path() != path {
            return Err(shape(
                "window bounds are not in the form 2024-01-05T10:33:50.000Z",
            ));
        }
        Ok(name)
    }
}

impl fmt::Display for WindowFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowDuration;
    use proptest::prelude::*;

    fn window(seconds: i64, width: &str) -> Window {
        let d: WindowDuration = width.parse().expect("duration");
        d.window_of(Timestamp::new(seconds, 0).expect("ts"))
            .expect("window")
    }

    #[test]
    fn formats_the_reference_name() {
        let shard = ShardId::new("shard1").expect("id");
        let name = WindowFileName::new(Destination::Shard(shard), window(1_704_450_830, "10s"));
        let expected =
            "shard1/2024-01-05T10:33:50.000Z-2024-01-05T10:34:00.000Z-pane-0-last-0-of-1.txt";
        assert_eq!(name.path(), expected);
        assert_eq!(WindowFileName::parse(expected), Ok(name));
        let skip = "skip/2024-01-05T10:33:50.000Z-2024-01-05T10:34:00.000Z-pane-0-last-0-of-1.txt";
        assert_eq!(
            WindowFileName::parse(skip).map(|n| n.destination),
            Ok(Destination::Skip)
        );
    }

    #[test]
    fn rejects_other_names_with_reasons() {
        let cases = [
            ("nodir.txt", "no shard directory"),
            (
                "a..b/2024-01-05T10:33:50.000Z-2024-01-05T10:34:00.000Z-pane-0-last-0-of-1.txt",
                "contains '..'",
            ),
            (
                "s/2024-01-05T10:33:50.000Z-2024-01-05T10:34:00.000Z-pane-1-last-0-of-1.txt",
                "does not end with",
            ),
            (
                "s/2024-01-05T10:33:50.000Z-pane-0-last-0-of-1.txt",
                "no <start>-<end>",
            ),
            (
                "s/2024-01-05T10:34:00.000Z-2024-01-05T10:33:50.000Z-pane-0-last-0-of-1.txt",
                "ends before",
            ),
            (
                "s/2024-01-05T10:33:50Z-2024-01-05T10:34:00.000Z-pane-0-last-0-of-1.txt",
                "not in the form",
            ),
            (
                "s/2024-01-05T10:33:50.000Z-2024-02-30T10:34:00.000Z-pane-0-last-0-of-1.txt",
                "bad window end",
            ),
        ];
        for (path, reason) in cases {
            let err = WindowFileName::parse(path).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(reason)),
                "{path}: {err:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn format_and_parse_round_trip(
            shard in "[^/\\p{Cc}]{1,20}",
            seconds in -62_135_596_800i64..253_402_200_000,
            width in prop::sample::select(vec!["1s", "10s", "7s", "1m", "15m", "1h", "24h"]),
        ) {
            let destination = match ShardId::new(shard) {
                Ok(id) => Destination::Shard(id),
                Err(_) => Destination::Skip,
            };
            let name = WindowFileName::new(destination, window(seconds, width));
            prop_assert_eq!(WindowFileName::parse(&name.path()), Ok(name));
        }
    }
}
