//! GTIDs of the source's transactions: MariaDB's GTID event (type 162, `domain-server-seq`),
//! parsed by hand since mysql_async decodes only MySQL's.

/// Event type of MariaDB's GTID event.
pub const MARIADB_GTID_EVENT: u8 = 162;

/// A parsed MariaDB GTID event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaGtid {
    pub seq_no: u64,
    pub domain_id: u32,
    pub flags: u8,
}

impl MariaGtid {
    /// Parses the body of a GTID event (type 162): seq_no u64, domain_id u32, flags u8, all LE.
    pub fn parse(data: &[u8]) -> Option<Self> {
        if data.len() < 13 {
            return None;
        }
        Some(Self {
            seq_no: u64::from_le_bytes(data[0..8].try_into().ok()?),
            domain_id: u32::from_le_bytes(data[8..12].try_into().ok()?),
            flags: data[12],
        })
    }

    /// A transaction without BEGIN/COMMIT (DDL).
    pub fn standalone(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mariadb_gtid_events() {
        let mut data = 42u64.to_le_bytes().to_vec();
        data.extend(7u32.to_le_bytes());
        data.push(0x01);
        let g = MariaGtid::parse(&data).unwrap();
        assert_eq!((g.seq_no, g.domain_id, g.standalone()), (42, 7, true));
        assert!(MariaGtid::parse(&data[..10]).is_none());
    }
}
