//! Small helpers that several rooms need and that belong to none of them:
//! durable file operations (atomic replacement, directory fsync), the
//! bounded bincode of stored records, the
//! rules for names read from users, media and the network, the clock as
//! records store it, the failpoints of the crash tests, the report a check makes, the progress of a long
//! operation, one-at-a-time turns per key, and the uid of this process. Near the bottom: it imports only `crypto` (for random names).

pub mod atomic;
pub mod clock;
pub mod codec;
pub mod failpoint;
pub mod names;
pub mod process;
pub mod progress;
pub mod report;
pub mod turns;
