//! Products: list with full-text search (`q`, relevance order), category filter and pagination,
//! get one, create and update (administrators), and the inventory read and adjust — the contract
//! and the handlers themselves, served alike by the monolith and product-service over the same
//! `products` and `inventory` tables (each side in its own schema).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mysql_async::prelude::*;
use mysql_async::{Pool, Row, Value};
use serde::{Deserialize, Serialize};

use crate::catalog_search::{CatalogSearch, Indexed};
use crate::db;
use crate::error::{ApiError, Validator};
use crate::extract::{ApiId, ApiJson, ApiQuery, AuthUser, VerifyToken};
use crate::format::{PageQuery, timestamp};
use crate::money::{format_cents, parse_cents};

/// A server state that serves the products routes: a pool over a schema with `products` and
/// `inventory`, a token check, and the cache of the listings' totals.
pub trait ProductsState: VerifyToken + Clone + Send + Sync + 'static {
    fn pool(&self) -> &Pool;
    fn counts(&self) -> &CountCache;
    /// An in-memory search index that answers `?q=` instead of SQL full-text search, if the
    /// server keeps one.
    fn search_index(&self) -> Option<&CatalogSearch> {
        None
    }
}

/// The `total` of a listing (one filter: search words and category), kept for a short while
/// instead of counting the catalog on every page. Writes through this process forget every
/// total at once; changes arriving otherwise (replication from the other side) show within the
/// time to live.
pub struct CountCache {
    ttl: std::time::Duration,
    totals: std::sync::Mutex<std::collections::HashMap<CountKey, (std::time::Instant, u64)>>,
}

#[derive(Hash, PartialEq, Eq)]
struct CountKey {
    q: Option<String>,
    category: Option<String>,
}

/// Filters kept at most; past that the cache starts over (a flood of distinct searches cannot
/// grow it without bound).
const COUNT_CACHE_ENTRIES: usize = 10_000;

impl CountCache {
    /// A cache whose totals live `ttl` (zero: every page counts).
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            totals: Default::default(),
        }
    }

    fn get(&self, key: &CountKey) -> Option<u64> {
        let totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, n)| *n)
    }

    fn put(&self, key: CountKey, total: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        if totals.len() >= COUNT_CACHE_ENTRIES {
            totals.clear();
        }
        totals.insert(key, (std::time::Instant::now(), total));
    }

    /// Forgets every total (a product was created or changed here).
    pub fn forget(&self) {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The products and inventory routes, for the server's router.
pub fn routes<S: ProductsState>() -> Router<S> {
    Router::new()
        .route("/api/products", get(list::<S>).post(create::<S>))
        .route("/api/products/{id}", get(get_one::<S>).put(update::<S>))
        .route("/api/products/{id}/inventory", get(inventory::<S>))
        .route(
            "/api/products/{id}/inventory/adjust",
            post(adjust_inventory::<S>),
        )
}

/// A product as the API shows it; `price` is a decimal string ("19.99").
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct ProductView {
    pub id: u64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: String,
    pub attributes: Option<serde_json::Value>,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "id, sku, name, description, category, CAST(price AS CHAR) AS price, \
                       attributes, active, created_at, updated_at";

impl ProductView {
    fn from_row(mut row: Row) -> Self {
        let attributes: Option<String> = row.take("attributes").expect("attributes");
        Self {
            id: row.take("id").expect("id"),
            sku: row.take("sku").expect("sku"),
            name: row.take("name").expect("name"),
            description: row.take("description").expect("description"),
            category: row.take("category").expect("category"),
            price: row.take("price").expect("price"),
            attributes: attributes.and_then(|a| serde_json::from_str(&a).ok()),
            active: row.take::<i8, _>("active").expect("active") != 0,
            created_at: timestamp(row.take("created_at").expect("created_at")),
            updated_at: timestamp(row.take("updated_at").expect("updated_at")),
        }
    }
}

pub async fn find(conn: &mut impl Queryable, id: u64) -> Result<Option<ProductView>, ApiError> {
    let row: Option<Row> = conn
        .exec_first(
            format!("SELECT {COLUMNS} FROM products WHERE id = ?"),
            (id,),
        )
        .await?;
    Ok(row.map(ProductView::from_row))
}

/// `GET /api/products` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub q: Option<String>,
    pub category: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// A page of results.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
}

/// `GET /api/products`: active products; with `q`, ranked by full-text relevance, then id.
pub async fn list<S: ProductsState>(
    State(state): State<S>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<ProductView>>, ApiError> {
    let (page, per_page, offset) = PageQuery {
        page: query.page,
        per_page: query.per_page,
    }
    .resolve()?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let category = query
        .category
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    Validator::default()
        .check(
            q.is_none_or(|q| q.chars().count() <= 200),
            "q",
            "must be at most 200 characters",
        )
        .check(
            category.is_none_or(|c| c.chars().count() <= 64),
            "category",
            "must be at most 64 characters",
        )
        .finish()?;
    let mut filter = String::from("active = 1");
    let mut params: Vec<Value> = Vec::new();
    if let Some(q) = q {
        filter.push_str(" AND MATCH(name, description) AGAINST (? IN NATURAL LANGUAGE MODE)");
        params.push(q.into());
    }
    if let Some(c) = category {
        filter.push_str(" AND category = ?");
        params.push(c.into());
    }
    let mut conn = state.pool().get_conn().await?;
    if let Some(hits) = q.and_then(|q| {
        state
            .search_index()?
            .search(q, category, offset as usize, per_page as usize)
    }) {
        return Ok(Json(Page {
            items: by_ids(&mut conn, &hits.ids).await?,
            page,
            per_page,
            total: hits.total,
        }));
    }
    let key = CountKey {
        q: q.map(str::to_string),
        category: category.map(str::to_string),
    };
    let total = match state.counts().get(&key) {
        Some(total) => total,
        None => {
            let total: u64 = conn
                .exec_first(
                    format!("SELECT COUNT(*) FROM products WHERE {filter}"),
                    params.clone(),
                )
                .await?
                .unwrap_or(0);
            state.counts().put(key, total);
            total
        }
    };
    // Placeholders: the filter's, then the relevance in ORDER BY.
    let mut select_params = params;
    let order = match q {
        Some(q) => {
            select_params.push(Value::from(q));
            "ORDER BY MATCH(name, description) AGAINST (? IN NATURAL LANGUAGE MODE) DESC, id ASC"
        }
        None => "ORDER BY id ASC",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM products WHERE {filter} {order} LIMIT {per_page} OFFSET {offset}"
    );
    let rows: Vec<Row> = conn.exec(sql, select_params).await?;
    Ok(Json(Page {
        items: rows.into_iter().map(ProductView::from_row).collect(),
        page,
        per_page,
        total,
    }))
}

/// The active products of `ids`, in that order.
async fn by_ids(conn: &mut impl Queryable, ids: &[u64]) -> Result<Vec<ProductView>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; ids.len()].join(", ");
    let rows: Vec<Row> = conn
        .exec(
            format!("SELECT {COLUMNS} FROM products WHERE id IN ({marks}) AND active = 1"),
            ids.to_vec(),
        )
        .await?;
    let mut found: std::collections::HashMap<u64, ProductView> = rows
        .into_iter()
        .map(ProductView::from_row)
        .map(|p| (p.id, p))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// Tells the search index (if any) about a product written through this server.
fn reindex<S: ProductsState>(state: &S, p: &ProductView) {
    if let Some(index) = state.search_index() {
        index.upsert(Indexed {
            id: p.id,
            name: p.name.clone(),
            description: p.description.clone(),
            category: p.category.clone(),
            active: p.active,
        });
    }
}

/// `GET /api/products/{id}`.
pub async fn get_one<S: ProductsState>(
    State(state): State<S>,
    ApiId(id): ApiId,
) -> Result<Json<ProductView>, ApiError> {
    let mut conn = state.pool().get_conn().await?;
    find(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("product"))
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_attributes(v: &mut Validator, attributes: Option<&serde_json::Value>) {
    v.check(
        attributes.is_none_or(|a| a.is_object() && a.to_string().len() <= 4096),
        "attributes",
        "must be a JSON object of at most 4096 bytes",
    );
}

/// `POST /api/products` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    pub price: String,
    pub attributes: Option<serde_json::Value>,
    #[serde(default)]
    pub initial_stock: i64,
    pub active: Option<bool>,
}

/// `POST /api/products` (administrators): 201; 409 when the SKU exists.
pub async fn create<S: ProductsState>(
    State(state): State<S>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    user.require_admin()?;
    let price = parse_cents(body.price.trim());
    let mut v = Validator::default();
    v.check(
        valid_sku(&body.sku),
        "sku",
        "must be 1 to 64 letters, digits, - or _",
    )
    .check(
        (1..=200).contains(&body.name.trim().chars().count()),
        "name",
        "must be 1 to 200 characters",
    )
    .check(
        body.description.chars().count() <= 5000,
        "description",
        "must be at most 5000 characters",
    )
    .check(
        (1..=64).contains(&body.category.trim().chars().count()),
        "category",
        "must be 1 to 64 characters",
    )
    .check(
        price.is_some(),
        "price",
        "must be a decimal string like \"19.99\"",
    )
    .check(
        (0..=1_000_000).contains(&body.initial_stock),
        "initial_stock",
        "must be between 0 and 1000000",
    );
    check_attributes(&mut v, body.attributes.as_ref());
    v.finish()?;
    let mut tx = state.pool().start_transaction(Default::default()).await?;
    let inserted = tx
        .exec_drop(
            "INSERT INTO products (sku, name, description, category, price, attributes, active) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                &body.sku,
                body.name.trim(),
                &body.description,
                body.category.trim(),
                format_cents(price.expect("validated")),
                body.attributes.as_ref().map(|a| a.to_string()),
                body.active.unwrap_or(true),
            ),
        )
        .await;
    match inserted {
        Err(e) if db::is_duplicate(&e) => {
            return Err(ApiError::Conflict {
                code: "sku_taken",
                message: format!("a product with SKU {} already exists", body.sku),
            });
        }
        other => other?,
    }
    let id = tx.last_insert_id().expect("auto increment id");
    tx.exec_drop(
        "INSERT INTO inventory (product_id, available) VALUES (?, ?)",
        (id, body.initial_stock),
    )
    .await?;
    let product = find(&mut tx, id).await?.expect("just inserted");
    tx.commit().await?;
    state.counts().forget();
    reindex(&state, &product);
    Ok((StatusCode::CREATED, Json(product)))
}

/// `PUT /api/products/{id}` body: any of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: Option<String>,
    pub attributes: Option<serde_json::Value>,
    pub active: Option<bool>,
}

/// `PUT /api/products/{id}` (administrators): 200 with the product; 404 when absent.
pub async fn update<S: ProductsState>(
    State(state): State<S>,
    user: AuthUser,
    ApiId(id): ApiId,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<ProductView>, ApiError> {
    user.require_admin()?;
    let price = body.price.as_deref().map(|p| parse_cents(p.trim()));
    let mut v = Validator::default();
    v.check(
        body.name.is_some()
            || body.description.is_some()
            || body.category.is_some()
            || body.price.is_some()
            || body.attributes.is_some()
            || body.active.is_some(),
        "body",
        "give at least one field to change",
    )
    .check(
        body.name
            .as_deref()
            .is_none_or(|n| (1..=200).contains(&n.trim().chars().count())),
        "name",
        "must be 1 to 200 characters",
    )
    .check(
        body.description
            .as_deref()
            .is_none_or(|d| d.chars().count() <= 5000),
        "description",
        "must be at most 5000 characters",
    )
    .check(
        body.category
            .as_deref()
            .is_none_or(|c| (1..=64).contains(&c.trim().chars().count())),
        "category",
        "must be 1 to 64 characters",
    )
    .check(
        price.is_none_or(|p| p.is_some()),
        "price",
        "must be a decimal string like \"19.99\"",
    );
    check_attributes(&mut v, body.attributes.as_ref());
    v.finish()?;
    let mut sets: Vec<&str> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(n) = &body.name {
        sets.push("name = ?");
        params.push(n.trim().into());
    }
    if let Some(d) = &body.description {
        sets.push("description = ?");
        params.push(d.as_str().into());
    }
    if let Some(c) = &body.category {
        sets.push("category = ?");
        params.push(c.trim().into());
    }
    if let Some(Some(p)) = price {
        sets.push("price = ?");
        params.push(format_cents(p).into());
    }
    if let Some(a) = &body.attributes {
        sets.push("attributes = ?");
        params.push(a.to_string().into());
    }
    if let Some(a) = body.active {
        sets.push("active = ?");
        params.push(a.into());
    }
    params.push(id.into());
    let mut tx = state.pool().start_transaction(Default::default()).await?;
    tx.exec_drop(
        format!("UPDATE products SET {} WHERE id = ?", sets.join(", ")),
        params,
    )
    .await?;
    let product = find(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    tx.commit().await?;
    state.counts().forget();
    reindex(&state, &product);
    Ok(Json(product))
}

/// Stock of one product.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct InventoryView {
    pub product_id: u64,
    pub available: i64,
    pub updated_at: String,
}

pub async fn find_inventory(
    conn: &mut impl Queryable,
    id: u64,
) -> Result<Option<InventoryView>, ApiError> {
    let row: Option<(u64, i64, chrono::NaiveDateTime)> = conn
        .exec_first(
            "SELECT product_id, available, updated_at FROM inventory WHERE product_id = ?",
            (id,),
        )
        .await?;
    Ok(
        row.map(|(product_id, available, updated_at)| InventoryView {
            product_id,
            available,
            updated_at: timestamp(updated_at),
        }),
    )
}

/// `GET /api/products/{id}/inventory`.
pub async fn inventory<S: ProductsState>(
    State(state): State<S>,
    ApiId(id): ApiId,
) -> Result<Json<InventoryView>, ApiError> {
    let mut conn = state.pool().get_conn().await?;
    find_inventory(&mut conn, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("product"))
}

/// `POST /api/products/{id}/inventory/adjust` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    pub delta: i64,
    pub reason: String,
}

/// `POST /api/products/{id}/inventory/adjust` (administrators): adds `delta` (may be negative);
/// 409 `insufficient_stock` when the stock would go below zero.
pub async fn adjust_inventory<S: ProductsState>(
    State(state): State<S>,
    user: AuthUser,
    ApiId(id): ApiId,
    ApiJson(body): ApiJson<AdjustBody>,
) -> Result<Json<InventoryView>, ApiError> {
    user.require_admin()?;
    Validator::default()
        .check(
            body.delta != 0 && body.delta.abs() <= 1_000_000,
            "delta",
            "must be a non-zero integer between -1000000 and 1000000",
        )
        .check(
            (1..=200).contains(&body.reason.trim().chars().count()),
            "reason",
            "must be 1 to 200 characters",
        )
        .finish()?;
    let mut tx = state.pool().start_transaction(Default::default()).await?;
    tx.exec_drop(
        "UPDATE inventory SET available = available + ? WHERE product_id = ? AND available + ? >= 0",
        (body.delta, id, body.delta),
    )
    .await?;
    if tx.affected_rows() == 0 {
        return match find_inventory(&mut tx, id).await? {
            None => Err(ApiError::NotFound("product")),
            Some(inv) => Err(ApiError::Conflict {
                code: "insufficient_stock",
                message: format!(
                    "product {id} has {} in stock, cannot remove {}",
                    inv.available, -body.delta
                ),
            }),
        };
    }
    // A restock goes to this side's escrow share; a removal must fit in it.
    if body.delta > 0 {
        crate::escrow::give_back(&mut tx, id, body.delta).await?;
    } else if crate::escrow::take(&mut tx, id, -body.delta).await? == crate::escrow::Take::Refused {
        return Err(ApiError::Conflict {
            code: "insufficient_stock",
            message: crate::escrow::refusal(id),
        });
    }
    let inv = find_inventory(&mut tx, id).await?.expect("just updated");
    tx.commit().await?;
    tracing::info!(product_id = id, delta = body.delta, reason = %body.reason.trim(), by = user.id, "inventory adjusted");
    Ok(Json(inv))
}
