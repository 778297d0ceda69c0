//! The catalog and its stock, the monolith's own way: list (full-text search ranked by relevance,
//! category filter, pages), get one, create and update (administrators), and read or adjust a
//! product's inventory. Its own SQL over `shop.products` and `shop.inventory`, its own field
//! rules and JSON shaping (prices and times formatted by the database).

use axum::Json;
use axum::http::StatusCode;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiId, ApiJson, ApiQuery, AuthUser};
use super::iso_time_sql;
use crate::db::{Db, Traced};
use crate::error::{ApiError, Validator};
use crate::money::{format_cents, parse_cents};

/// A product as the API shows it; `price` as a decimal string.
fn product_select() -> String {
    format!(
        "SELECT p.id, p.sku, p.name, p.description, p.category, CAST(p.price AS CHAR), \
         p.attributes, p.active, {}, {} FROM products p",
        iso_time_sql("p.created_at"),
        iso_time_sql("p.updated_at")
    )
}

type ProductRow = (
    u64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    String,
    String,
);

fn product_json(row: ProductRow) -> Value {
    let (id, sku, name, description, category, price, attributes, active, created, updated) = row;
    json!({
        "id": id,
        "sku": sku,
        "name": name,
        "description": description,
        "category": category,
        "price": price,
        "attributes": attributes.and_then(|a| serde_json::from_str::<Value>(&a).ok()),
        "active": active,
        "created_at": created,
        "updated_at": updated,
    })
}

async fn load_product(
    conn: &mut Traced<impl Queryable>,
    id: u64,
) -> Result<Option<Value>, ApiError> {
    let row: Option<ProductRow> = conn
        .first(format!("{} WHERE p.id = ?", product_select()), (id,))
        .await?;
    Ok(row.map(product_json))
}

/// `GET /api/products` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    q: Option<String>,
    category: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `GET /api/products`: active products; with `q`, by full-text relevance, then id.
pub async fn list(
    db: Db,
    ApiQuery(query): ApiQuery<CatalogQuery>,
) -> Result<Json<Value>, ApiError> {
    let (page, per_page, skip) = super::Paging {
        page: query.page,
        per_page: query.per_page,
    }
    .window()?;
    let words = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let category = query
        .category
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    Validator::default()
        .check(
            words.is_none_or(|q| q.chars().count() <= 200),
            "q",
            "must be at most 200 characters",
        )
        .check(
            category.is_none_or(|c| c.chars().count() <= 64),
            "category",
            "must be at most 64 characters",
        )
        .finish()?;
    let relevance = "MATCH(p.name, p.description) AGAINST (? IN NATURAL LANGUAGE MODE)";
    let mut wheres = vec!["p.active = 1".to_string()];
    let mut params: Vec<mysql_async::Value> = Vec::new();
    if let Some(q) = words {
        wheres.push(relevance.to_string());
        params.push(q.into());
    }
    if let Some(c) = category {
        wheres.push("p.category = ?".to_string());
        params.push(c.into());
    }
    let filter = wheres.join(" AND ");
    let mut conn = db.conn().await?;
    // A search ranks every match to sort them anyway: the same pass counts them
    // (SQL_CALC_FOUND_ROWS, as shops of its age do). A plain listing counts on the index.
    let total: Option<u64> = match words {
        Some(_) => None,
        None => {
            conn.first(
                format!("SELECT COUNT(*) FROM products p WHERE {filter}"),
                params.clone(),
            )
            .await?
        }
    };
    let (select, order) = match words {
        Some(q) => {
            params.push(q.into());
            (
                product_select().replacen("SELECT ", "SELECT SQL_CALC_FOUND_ROWS ", 1),
                format!("{relevance} DESC, p.id"),
            )
        }
        None => (product_select(), "p.id".to_string()),
    };
    let rows: Vec<ProductRow> = conn
        .all(
            format!("{select} WHERE {filter} ORDER BY {order} LIMIT {per_page} OFFSET {skip}"),
            params,
        )
        .await?;
    let total = match total {
        Some(n) => Some(n),
        None => conn.first("SELECT FOUND_ROWS()", ()).await?,
    };
    Ok(Json(json!({
        "items": rows.into_iter().map(product_json).collect::<Vec<_>>(),
        "page": page,
        "per_page": per_page,
        "total": total.unwrap_or(0),
    })))
}

/// `GET /api/products/{id}`.
pub async fn get_one(db: Db, ApiId(id): ApiId) -> Result<Json<Value>, ApiError> {
    let mut conn = db.conn().await?;
    load_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("product"))
}

/// A stock-keeping unit: 1 to 64 letters, digits, dashes or underscores.
fn sku_ok(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= 64
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn attributes_ok(attributes: Option<&Value>) -> bool {
    match attributes {
        None => true,
        Some(a) => a.is_object() && a.to_string().len() <= 4096,
    }
}

const SKU_RULE: &str = "must be 1 to 64 letters, digits, - or _";
const NAME_RULE: &str = "must be 1 to 200 characters";
const DESCRIPTION_RULE: &str = "must be at most 5000 characters";
const CATEGORY_RULE: &str = "must be 1 to 64 characters";
const PRICE_RULE: &str = "must be a decimal string like \"19.99\"";
const ATTRIBUTES_RULE: &str = "must be a JSON object of at most 4096 bytes";

fn length_in(text: &str, range: std::ops::RangeInclusive<usize>) -> bool {
    range.contains(&text.chars().count())
}

/// `POST /api/products` form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProductForm {
    sku: String,
    name: String,
    #[serde(default)]
    description: String,
    category: String,
    price: String,
    attributes: Option<Value>,
    #[serde(default)]
    initial_stock: i64,
    active: Option<bool>,
}

/// `POST /api/products` (administrators): 201 with the product and its stock row; 409 when the
/// SKU exists.
pub async fn create(
    db: Db,
    user: AuthUser,
    ApiJson(form): ApiJson<NewProductForm>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require_admin()?;
    let cents = parse_cents(form.price.trim());
    Validator::default()
        .check(sku_ok(&form.sku), "sku", SKU_RULE)
        .check(length_in(form.name.trim(), 1..=200), "name", NAME_RULE)
        .check(
            length_in(&form.description, 0..=5000),
            "description",
            DESCRIPTION_RULE,
        )
        .check(
            length_in(form.category.trim(), 1..=64),
            "category",
            CATEGORY_RULE,
        )
        .check(cents.is_some(), "price", PRICE_RULE)
        .check(
            (0..=1_000_000).contains(&form.initial_stock),
            "initial_stock",
            "must be between 0 and 1000000",
        )
        .check(
            attributes_ok(form.attributes.as_ref()),
            "attributes",
            ATTRIBUTES_RULE,
        )
        .finish()?;
    let price = format_cents(cents.unwrap_or_default());
    let mut tx = db.begin().await?;
    let inserted = tx
        .run(
            "INSERT INTO products (sku, name, description, category, price, attributes, active) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                &form.sku,
                form.name.trim(),
                &form.description,
                form.category.trim(),
                price,
                form.attributes.as_ref().map(Value::to_string),
                form.active.unwrap_or(true),
            ),
        )
        .await;
    if let Err(mysql_async::Error::Server(e)) = &inserted
        && e.code == 1062
    {
        return Err(ApiError::Conflict {
            code: "sku_taken",
            message: format!("a product with SKU {} already exists", form.sku),
        });
    }
    inserted?;
    let id = tx
        .last_insert_id()
        .ok_or_else(|| ApiError::Internal("no insert id".into()))?;
    tx.run(
        "INSERT INTO inventory (product_id, available) VALUES (?, ?)",
        (id, form.initial_stock),
    )
    .await?;
    let product = load_product(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::Internal("the new product is gone".into()))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// `PUT /api/products/{id}` form: any of the fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductChangeForm {
    name: Option<String>,
    description: Option<String>,
    category: Option<String>,
    price: Option<String>,
    attributes: Option<Value>,
    active: Option<bool>,
}

/// `PUT /api/products/{id}` (administrators): 200 with the product; 404 when absent.
pub async fn update(
    db: Db,
    user: AuthUser,
    ApiId(id): ApiId,
    ApiJson(form): ApiJson<ProductChangeForm>,
) -> Result<Json<Value>, ApiError> {
    user.require_admin()?;
    let cents = form.price.as_deref().map(|p| parse_cents(p.trim()));
    let anything = form.name.is_some()
        || form.description.is_some()
        || form.category.is_some()
        || form.price.is_some()
        || form.attributes.is_some()
        || form.active.is_some();
    Validator::default()
        .check(anything, "body", "give at least one field to change")
        .check(
            form.name
                .as_deref()
                .is_none_or(|n| length_in(n.trim(), 1..=200)),
            "name",
            NAME_RULE,
        )
        .check(
            form.description
                .as_deref()
                .is_none_or(|d| length_in(d, 0..=5000)),
            "description",
            DESCRIPTION_RULE,
        )
        .check(
            form.category
                .as_deref()
                .is_none_or(|c| length_in(c.trim(), 1..=64)),
            "category",
            CATEGORY_RULE,
        )
        .check(cents.is_none_or(|c| c.is_some()), "price", PRICE_RULE)
        .check(
            attributes_ok(form.attributes.as_ref()),
            "attributes",
            ATTRIBUTES_RULE,
        )
        .finish()?;
    let mut sets = Vec::new();
    let mut params: Vec<mysql_async::Value> = Vec::new();
    let mut set = |column: &'static str, value: mysql_async::Value| {
        sets.push(format!("{column} = ?"));
        params.push(value);
    };
    if let Some(n) = &form.name {
        set("name", n.trim().into());
    }
    if let Some(d) = &form.description {
        set("description", d.as_str().into());
    }
    if let Some(c) = &form.category {
        set("category", c.trim().into());
    }
    if let Some(Some(c)) = cents {
        set("price", format_cents(c).into());
    }
    if let Some(a) = &form.attributes {
        set("attributes", a.to_string().into());
    }
    if let Some(a) = form.active {
        set("active", a.into());
    }
    params.push(id.into());
    let mut conn = db.conn().await?;
    conn.run(
        format!("UPDATE products SET {} WHERE id = ?", sets.join(", ")),
        params,
    )
    .await?;
    load_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("product"))
}

async fn load_stock(conn: &mut Traced<impl Queryable>, id: u64) -> Result<Option<Value>, ApiError> {
    let row: Option<(u64, i64, String)> = conn
        .first(
            format!(
                "SELECT product_id, available, {} FROM inventory WHERE product_id = ?",
                iso_time_sql("updated_at")
            ),
            (id,),
        )
        .await?;
    Ok(row.map(|(product_id, available, updated_at)| {
        json!({"product_id": product_id, "available": available, "updated_at": updated_at})
    }))
}

/// `GET /api/products/{id}/inventory`.
pub async fn inventory(db: Db, ApiId(id): ApiId) -> Result<Json<Value>, ApiError> {
    let mut conn = db.conn().await?;
    load_stock(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("product"))
}

/// `POST /api/products/{id}/inventory/adjust` form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    delta: i64,
    reason: String,
}

/// `POST /api/products/{id}/inventory/adjust` (administrators): adds `delta` (may be negative);
/// 409 `insufficient_stock` when the stock would go below zero.
pub async fn adjust_inventory(
    db: Db,
    user: AuthUser,
    ApiId(id): ApiId,
    ApiJson(adjustment): ApiJson<StockAdjustment>,
) -> Result<Json<Value>, ApiError> {
    user.require_admin()?;
    let delta = adjustment.delta;
    let reason = adjustment.reason.trim();
    Validator::default()
        .check(
            delta != 0 && (-1_000_000..=1_000_000).contains(&delta),
            "delta",
            "must be a non-zero integer between -1000000 and 1000000",
        )
        .check(
            length_in(reason, 1..=200),
            "reason",
            "must be 1 to 200 characters",
        )
        .finish()?;
    let mut tx = db.begin().await?;
    // Read under a lock, then write: the old way, one product row at a time.
    let current: Option<i64> = tx
        .first(
            "SELECT available FROM inventory WHERE product_id = ? FOR UPDATE",
            (id,),
        )
        .await?;
    let Some(available) = current else {
        return Err(ApiError::NotFound("product"));
    };
    if available + delta < 0 {
        return Err(ApiError::Conflict {
            code: "insufficient_stock",
            message: format!(
                "product {id} has {available} in stock, cannot remove {}",
                -delta
            ),
        });
    }
    tx.run(
        "UPDATE inventory SET available = ? WHERE product_id = ?",
        (available + delta, id),
    )
    .await?;
    // During a write canary a restock goes to this side's escrow share; a removal must fit in it.
    let held: Option<i64> = tx
        .first(
            "SELECT units FROM stock_escrow WHERE product_id = ? FOR UPDATE",
            (id,),
        )
        .await?;
    if let Some(units) = held {
        if units + delta < 0 {
            return Err(ApiError::Conflict {
                code: "insufficient_stock",
                message: format!(
                    "product {id} has {units} in this side's share, cannot remove {} (the rest is held for the other side of a migration)",
                    -delta
                ),
            });
        }
        tx.run(
            "UPDATE stock_escrow SET units = units + ? WHERE product_id = ?",
            (delta, id),
        )
        .await?;
    }
    let stock = load_stock(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    tx.commit().await?;
    tracing::info!(product_id = id, delta, reason = %reason, by = user.id, "inventory adjusted");
    Ok(Json(stock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_and_attribute_rules() {
        assert!(sku_ok("BAG-01_x"));
        for bad in ["", "has space", "ümlaut", &"x".repeat(65)] {
            assert!(!sku_ok(bad), "{bad}");
        }
        assert!(attributes_ok(None));
        assert!(attributes_ok(Some(&json!({"colour": "red"}))));
        assert!(!attributes_ok(Some(&json!(["red"]))));
        assert!(!attributes_ok(Some(&json!({"x": "y".repeat(5000)}))));
    }
}
