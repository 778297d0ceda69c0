//! Catalog search held in memory: an inverted index of every product's name and description that
//! ranks as InnoDB's natural-language full-text search does (Σ tf·idf², ties by id), so a service
//! answers `?q=` as the monolith's `MATCH … AGAINST` would, without ranking every match in SQL.
//! Kept current from the service's own writes at once, from a poll of recently changed rows and
//! from a periodic full reconcile (rows replicated with older timestamps).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mysql_async::Pool;
use mysql_async::prelude::*;

/// InnoDB's default full-text stopwords (`INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD`).
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "are", "as", "at", "be", "by", "com", "de", "en", "for", "from", "how",
    "i", "in", "is", "it", "la", "of", "on", "or", "that", "the", "this", "to", "was", "what",
    "when", "where", "who", "will", "with", "und", "www",
];

/// `innodb_ft_min_token_size` and `innodb_ft_max_token_size`, their defaults.
const MIN_TOKEN_CHARS: usize = 3;
const MAX_TOKEN_CHARS: usize = 84;

/// The words of `text` as InnoDB's built-in parser cuts them: runs of letters, digits and `_`,
/// lower-cased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The words a query searches for: no stopwords, none shorter or longer than InnoDB indexes.
fn query_terms(q: &str) -> Vec<String> {
    let mut terms: Vec<String> = words(q)
        .filter(|w| {
            let n = w.chars().count();
            (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&n) && !STOPWORDS.contains(&w.as_str())
        })
        .collect();
    terms.sort();
    terms.dedup();
    terms
}

/// One product as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub category: String,
    pub active: bool,
}

struct Doc {
    /// Term id and how often the term occurs in name and description together.
    terms: Vec<(u32, u32)>,
    active: bool,
    /// Lower-cased, trailing spaces trimmed: how `category = ?` compares under the table's
    /// collation.
    category: String,
    source: Indexed,
}

#[derive(Default)]
struct Index {
    docs: HashMap<u64, Doc>,
    term_ids: HashMap<String, u32>,
    /// Per term id: product id → occurrences.
    postings: Vec<HashMap<u64, u32>>,
}

fn category_key(c: &str) -> String {
    c.trim_end_matches(' ').to_lowercase()
}

impl Index {
    fn remove(&mut self, id: u64) {
        if let Some(doc) = self.docs.remove(&id) {
            for (term, _) in doc.terms {
                self.postings[term as usize].remove(&id);
            }
        }
    }

    fn upsert(&mut self, p: Indexed) {
        if self.docs.get(&p.id).is_some_and(|d| d.source == p) {
            return;
        }
        self.remove(p.id);
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for w in words(&p.name).chain(words(&p.description)) {
            if w.chars().count() > MAX_TOKEN_CHARS {
                continue;
            }
            let next = self.term_ids.len() as u32;
            let term = *self.term_ids.entry(w).or_insert(next);
            if term as usize == self.postings.len() {
                self.postings.push(HashMap::new());
            }
            *counts.entry(term).or_default() += 1;
        }
        for (term, n) in &counts {
            self.postings[*term as usize].insert(p.id, *n);
        }
        self.docs.insert(
            p.id,
            Doc {
                terms: counts.into_iter().collect(),
                active: p.active,
                category: category_key(&p.category),
                source: p,
            },
        );
    }
}

/// A page of search results: every match counted, the page's product ids in rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hits {
    pub total: u64,
    pub ids: Vec<u64>,
}

/// How the index is kept current.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// Rows changed within `lookback` are read again this often.
    pub poll: Duration,
    pub lookback: Duration,
    /// Every row is compared with the index this often (rows replicated with older
    /// `updated_at`, deletions).
    pub reconcile: Duration,
}

/// The index and whether its first full load is done (until then the caller searches in SQL).
#[derive(Clone)]
pub struct CatalogSearch {
    index: Arc<RwLock<Index>>,
    ready: Arc<AtomicBool>,
    /// `<prefix>_search_index_answers_total`: searches the index answered.
    answered: prometheus::IntCounter,
    /// `<prefix>_search_index_products`: products indexed.
    products: prometheus::IntGauge,
}

impl CatalogSearch {
    /// An empty index whose metrics are named after the server (`product_service`).
    pub fn new(metric_prefix: &str) -> Self {
        Self {
            index: Arc::default(),
            ready: Arc::default(),
            answered: prometheus::IntCounter::new(
                format!("{metric_prefix}_search_index_answers_total"),
                "Catalog searches answered by the in-memory index (not SQL full-text search)",
            )
            .expect("metric"),
            products: prometheus::IntGauge::new(
                format!("{metric_prefix}_search_index_products"),
                "Products in the in-memory search index",
            )
            .expect("metric"),
        }
    }

    /// Adds the index's metrics to the server's.
    pub fn register(&self, metrics: &crate::http::HttpMetrics) {
        metrics.register(&self.answered);
        metrics.register(&self.products);
    }

    /// Whether the first full load is done.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Products indexed (active or not).
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .docs
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A product created or changed: indexed again now.
    pub fn upsert(&self, p: Indexed) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        index.upsert(p);
        self.products.set(index.docs.len() as i64);
    }

    /// Active products matching `q` (and `category`), ranked as InnoDB's natural-language mode
    /// ranks them; `None` until the index is loaded.
    pub fn search(
        &self,
        q: &str,
        category: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Option<Hits> {
        if !self.ready() {
            return None;
        }
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let total_docs = index.docs.len() as f64;
        let category = category.map(category_key);
        let mut ranks: HashMap<u64, f32> = HashMap::new();
        for term in query_terms(q) {
            let Some(postings) = index
                .term_ids
                .get(&term)
                .map(|t| &index.postings[*t as usize])
                .filter(|p| !p.is_empty())
            else {
                continue;
            };
            let df = postings.len() as f64;
            // A word in every document would weigh nothing; InnoDB gives it a sliver instead.
            let idf = if df >= total_docs {
                1.0001f64.log10()
            } else {
                (total_docs / df).log10()
            };
            for (id, tf) in postings {
                *ranks.entry(*id).or_default() += (f64::from(*tf) * idf * idf) as f32;
            }
        }
        let mut hits: Vec<(f32, u64)> = ranks
            .into_iter()
            .filter(|(id, rank)| {
                *rank > 0.0
                    && index.docs.get(id).is_some_and(|d| {
                        d.active && category.as_deref().is_none_or(|c| d.category == c)
                    })
            })
            .map(|(id, rank)| (rank, id))
            .collect();
        hits.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.answered.inc();
        Some(Hits {
            total: hits.len() as u64,
            ids: hits
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|(_, id)| id)
                .collect(),
        })
    }

    /// Loads every product, then keeps the index current until the process ends.
    pub async fn maintain(self, pool: Pool, upkeep: Upkeep) {
        loop {
            match self.reconcile(&pool).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "catalog search: first load failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(products = self.len(), "catalog search index loaded");
        let mut last_reconcile = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(upkeep.poll).await;
            let result = if last_reconcile.elapsed() >= upkeep.reconcile {
                last_reconcile = tokio::time::Instant::now();
                self.reconcile(&pool).await.map(|fixed| {
                    if fixed > 0 {
                        tracing::info!(fixed, "catalog search: reconcile found changes");
                    }
                })
            } else {
                self.poll(&pool, upkeep.lookback).await
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "catalog search: refresh failed");
            }
        }
    }

    /// Re-reads the rows changed within `lookback`.
    async fn poll(&self, pool: &Pool, lookback: Duration) -> Result<(), mysql_async::Error> {
        let mut conn = pool.get_conn().await?;
        let rows: Vec<(u64, String, String, String, i8)> = conn
            .exec(
                "SELECT id, name, description, category, active FROM products \
                 WHERE updated_at >= NOW(3) - INTERVAL ? MICROSECOND",
                (lookback.as_micros() as u64,),
            )
            .await?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            index.upsert(indexed(row));
        }
        self.products.set(index.docs.len() as i64);
        Ok(())
    }

    /// Compares every row with the index: changed rows indexed again, deleted ones dropped.
    /// Returns how many it fixed.
    async fn reconcile(&self, pool: &Pool) -> Result<usize, mysql_async::Error> {
        let mut conn = pool.get_conn().await?;
        let rows: Vec<(u64, String, String, String, i8)> = conn
            .query("SELECT id, name, description, category, active FROM products")
            .await?;
        drop(conn);
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let mut fixed = 0;
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            let p = indexed(row);
            seen.insert(p.id);
            if index.docs.get(&p.id).is_none_or(|d| d.source != p) {
                fixed += 1;
                index.upsert(p);
            }
        }
        let gone: Vec<u64> = index
            .docs
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        fixed += gone.len();
        for id in gone {
            index.remove(id);
        }
        self.products.set(index.docs.len() as i64);
        Ok(fixed)
    }
}

fn indexed(
    (id, name, description, category, active): (u64, String, String, String, i8),
) -> Indexed {
    Indexed {
        id,
        name,
        description,
        category,
        active: active != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: u64, name: &str, description: &str, category: &str) -> Indexed {
        Indexed {
            id,
            name: name.into(),
            description: description.into(),
            category: category.into(),
            active: true,
        }
    }

    fn loaded(products: Vec<Indexed>) -> CatalogSearch {
        let s = CatalogSearch::new("test");
        for p in products {
            s.upsert(p);
        }
        s.ready.store(true, Ordering::Release);
        s
    }

    #[test]
    fn words_are_cut_and_filtered_as_innodb_does() {
        assert_eq!(
            query_terms("The Water-resistant TENT, for a hike_2 in it!"),
            vec!["hike_2", "resistant", "tent", "water"]
        );
        assert!(query_terms("a an of it").is_empty());
    }

    #[test]
    fn ranks_by_term_frequency_and_rarity_then_id() {
        let s = loaded(vec![
            product(1, "Tent", "A tent", "camping"),
            product(2, "Tent", "A tent and a tent", "camping"),
            product(3, "Stove", "A stove for the tent", "camping"),
            product(4, "Mug", "A mug", "kitchen"),
            product(5, "Lamp", "A lamp", "home"),
        ]);
        let hits = s.search("tent", None, 0, 10).unwrap();
        assert_eq!(
            hits,
            Hits {
                total: 3,
                ids: vec![2, 1, 3]
            }
        );
        // The rarer word outweighs the common one.
        let hits = s.search("tent stove", None, 0, 10).unwrap();
        assert_eq!(hits.ids[0], 3);
        // Category compares as the collation does; paging skips and takes.
        let hits = s.search("tent", Some("CAMPING "), 1, 1).unwrap();
        assert_eq!(
            hits,
            Hits {
                total: 3,
                ids: vec![1]
            }
        );
        // A deactivated product leaves the results, not the statistics.
        s.upsert(Indexed {
            active: false,
            ..product(2, "Tent", "A tent and a tent", "camping")
        });
        assert_eq!(s.search("tent", None, 0, 10).unwrap().ids, vec![1, 3]);
        assert_eq!(s.search("zeppelin", None, 0, 10).unwrap().total, 0);
    }
}
