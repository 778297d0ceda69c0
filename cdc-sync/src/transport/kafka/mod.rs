//! The Kafka transport. The publisher turns binlog transactions into Debezium events (JSON with
//! schemas, key = primary key) on `<prefix>.<db>.<table>`, framed by BEGIN/END records on
//! `<prefix>.transaction`, and resumes from the last END in Kafka. The applier consumes in a
//! group, rebuilds each source transaction in END order, applies it with its source offset (so a
//! redelivered transaction is skipped) and commits Kafka offsets only behind what it applied.

pub mod codec;
pub mod consume;
pub mod publish;
pub mod topics;

use crate::config::StreamConfig;
use crate::error::CdcError;
use crate::metrics::Metrics;

pub use codec::{
    DataCollection, DecodedSchemas, EncodedSchemas, Record, TxnRecord, TxnStatus, decode_record,
    records,
};
pub use consume::apply;
pub use publish::{last_published, publish};
pub use topics::{Topics, ensure_topics};

/// Runs publisher and applier together until `stop` or a fatal error in either.
pub async fn run(
    config: &StreamConfig,
    metrics: Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CdcError> {
    // Either half failing stops the other.
    let (halt_tx, halt_rx) = tokio::sync::watch::channel(false);
    let mut outer = stop.clone();
    let forward = {
        let halt_tx = halt_tx.clone();
        tokio::spawn(async move {
            let _ = outer.wait_for(|s| *s).await;
            let _ = halt_tx.send(true);
        })
    };
    let stopper = |r: Result<(), CdcError>| {
        if r.is_err() {
            let _ = halt_tx.send(true);
        }
        r
    };
    let (a, b) = tokio::join!(
        async { stopper(publish(config, metrics.clone(), halt_rx.clone()).await) },
        async { stopper(apply(config, metrics.clone(), halt_rx.clone()).await) }
    );
    forward.abort();
    a.and(b)
}
