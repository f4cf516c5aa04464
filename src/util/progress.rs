//! Progress of a long operation (fsck, import, gc), as one value every
//! door can show: the CLI draws a bar on a terminal, the control socket
//! sends it to the CLI that asked, as it happens.

use serde::{Deserialize, Serialize};

/// How far a task has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What is being done, for the bar's label: `checking images`.
    pub task: String,
    pub done: u64,
    /// 0 when not known yet.
    pub total: u64,
    pub unit: Unit,
}

/// What `done` and `total` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    Volumes,
    Containers,
}
