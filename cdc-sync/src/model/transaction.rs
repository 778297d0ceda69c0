//! A source transaction as it travels from the reader to the applier: its change events, its
//! commit time and the binlog offset right after its commit (where a resumed stream starts).

use serde::{Deserialize, Serialize};

use crate::model::debezium::ChangeEvent;

/// A position in the binlog: resume here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub file: String,
    pub pos: u64,
    pub gtid: Option<String>,
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " (gtid {g})")?;
        }
        Ok(())
    }
}

/// One source transaction: its changes and the offset right after its commit.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub end: Offset,
    pub gtid: Option<String>,
    pub events: Vec<ChangeEvent>,
    /// Source commit time, epoch milliseconds.
    pub ts_ms: i64,
    /// Row events skipped because cdc-sync itself wrote them.
    pub suppressed: u64,
    /// Written by a cdc-sync applier (`skip_replication`): nothing in it is ever applied.
    pub marked: bool,
}

/// Parses `file:pos`.
pub fn parse_position(text: &str) -> Result<Offset, String> {
    let (file, pos) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("start_position {text:?} must be binlog-file:position"))?;
    let pos: u64 = pos
        .parse()
        .map_err(|_| format!("start_position {text:?}: {pos:?} is not a position"))?;
    if file.is_empty() || pos < 4 {
        return Err(format!(
            "start_position {text:?} must be binlog-file:position (position ≥ 4)"
        ));
    }
    Ok(Offset {
        file: file.to_string(),
        pos,
        gtid: None,
    })
}

/// Orders binlog positions: by file sequence number, then position.
pub fn position_key(file: &str, pos: u64) -> (u64, String, u64) {
    let seq = file
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(0);
    (seq, file.to_string(), pos)
}

/// Whether `a` is at or before `b` in the binlog.
pub fn before_or_at(a: &Offset, b: &Offset) -> bool {
    position_key(&a.file, a.pos) <= position_key(&b.file, b.pos)
}
