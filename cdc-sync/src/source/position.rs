//! Where a stream starts reading: the stored offset's absence is filled by the config's
//! `start_position`, else by the source's current binlog position.

use mysql_async::Pool;

use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::model::transaction::{Offset, parse_position};
use crate::source::binlog::BinlogSource;

/// Where a stream without a stored offset starts: `start_position`, else the source's current
/// binlog position.
pub async fn initial_offset(config: &StreamConfig) -> Result<Offset, CdcError> {
    if let Some(p) = &config.start_position {
        return parse_position(p).map_err(CdcError::Config);
    }
    let pool = Pool::new(
        mysql_async::Opts::from_url(&config.source_url)
            .map_err(|e| CdcError::Config(e.to_string()))?,
    );
    let o = BinlogSource::current_position(&pool, config.mode).await?;
    pool.disconnect().await?;
    Ok(o)
}
