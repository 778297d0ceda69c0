//! A side's escrow share of each product's stock while both sides sell (a write canary): a sale
//! takes from `stock_escrow` as well as from `inventory`, so the two sides together never sell
//! more than there is. A product without an escrow row has none: the stock guard alone decides.

use mysql_async::prelude::Queryable;

/// What taking `quantity` of a product from this side's escrow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The product has no escrow: nothing to take.
    Unescrowed,
    Taken,
    /// This side's share is smaller than `quantity` (the other side holds the rest).
    Refused,
}

/// Takes `quantity` units from this side's share of `product_id`, in the caller's transaction.
pub async fn take(
    tx: &mut mysql_async::Transaction<'_>,
    product_id: u64,
    quantity: i64,
) -> Result<Take, mysql_async::Error> {
    tx.exec_drop(
        "UPDATE stock_escrow SET units = units - ?, taken = taken + 1 WHERE product_id = ? AND units >= ?",
        (quantity, product_id, quantity),
    )
    .await?;
    if tx.affected_rows() == 1 {
        return Ok(Take::Taken);
    }
    let held: Option<i64> = tx
        .exec_first(
            "SELECT units FROM stock_escrow WHERE product_id = ?",
            (product_id,),
        )
        .await?;
    Ok(if held.is_some() {
        Take::Refused
    } else {
        Take::Unescrowed
    })
}

/// Gives `quantity` units back to this side's share (a release, a return, a restock); nothing
/// when the product has no escrow.
pub async fn give_back(
    tx: &mut mysql_async::Transaction<'_>,
    product_id: u64,
    quantity: i64,
) -> Result<(), mysql_async::Error> {
    tx.exec_drop(
        "UPDATE stock_escrow SET units = units + ? WHERE product_id = ?",
        (quantity, product_id),
    )
    .await
}

/// Counts a refusal of `product_id` in this side's tally (after the refused order's transaction
/// rolled back, so that the count stays).
pub async fn record_refusal(
    pool: &mysql_async::Pool,
    product_id: u64,
) -> Result<(), mysql_async::Error> {
    pool.get_conn()
        .await?
        .exec_drop(
            "UPDATE stock_escrow SET refused = refused + 1 WHERE product_id = ?",
            (product_id,),
        )
        .await
}

/// The message of a refusal: the shop's `insufficient_stock`, saying why.
pub fn refusal(product_id: u64) -> String {
    format!(
        "not enough stock for product {product_id} (the rest is held for the other side of a migration)"
    )
}
