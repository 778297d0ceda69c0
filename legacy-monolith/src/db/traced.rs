//! A request's way to the database: a connection or transaction whose every statement carries
//! the request's sqlcommenter comment. Handlers get [`Db`] as an extractor and never touch the
//! pool, so no statement of a request goes out without its trace context.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Params, Pool, Transaction, TxOpts};

use super::statement::render;
use crate::app::AppState;
use crate::trace::RequestTrace;

/// The database as one request sees it.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    comment: Arc<str>,
}

impl FromRequestParts<AppState> for Db {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let trace = RequestTrace::from_request_parts(parts, state).await?;
        Ok(Self {
            pool: state.pool.clone(),
            comment: trace.comment.as_str().into(),
        })
    }
}

impl Db {
    /// A connection from the pool.
    pub async fn conn(&self) -> Result<Traced<Conn>, mysql_async::Error> {
        Ok(Traced {
            inner: self.pool.get_conn().await?,
            comment: self.comment.clone(),
        })
    }

    /// A transaction (default isolation, REPEATABLE READ) on a connection from the pool.
    pub async fn begin(&self) -> Result<Traced<Transaction<'static>>, mysql_async::Error> {
        Ok(Traced {
            inner: self.pool.start_transaction(TxOpts::default()).await?,
            comment: self.comment.clone(),
        })
    }
}

/// A connection or transaction that appends the request's comment to every statement.
pub struct Traced<Q> {
    inner: Q,
    comment: Arc<str>,
}

impl<Q: Queryable> Traced<Q> {
    fn text(&self, sql: &str, params: impl Into<Params>) -> Result<String, mysql_async::Error> {
        render(sql, params.into(), &self.comment)
    }

    /// The first row, if any.
    pub async fn first<T: FromRow + Send + 'static>(
        &mut self,
        sql: impl AsRef<str>,
        params: impl Into<Params>,
    ) -> Result<Option<T>, mysql_async::Error> {
        let text = self.text(sql.as_ref(), params)?;
        self.inner.query_first(text).await
    }

    /// Every row.
    pub async fn all<T: FromRow + Send + 'static>(
        &mut self,
        sql: impl AsRef<str>,
        params: impl Into<Params>,
    ) -> Result<Vec<T>, mysql_async::Error> {
        let text = self.text(sql.as_ref(), params)?;
        self.inner.query(text).await
    }

    /// A statement whose rows, if any, are not wanted.
    pub async fn run(
        &mut self,
        sql: impl AsRef<str>,
        params: impl Into<Params>,
    ) -> Result<(), mysql_async::Error> {
        let text = self.text(sql.as_ref(), params)?;
        self.inner.query_drop(text).await
    }
}

impl Traced<Conn> {
    /// Id the last INSERT gave its row.
    pub fn last_insert_id(&self) -> Option<u64> {
        self.inner.last_insert_id()
    }
}

impl Traced<Transaction<'static>> {
    /// Id the last INSERT gave its row.
    pub fn last_insert_id(&self) -> Option<u64> {
        self.inner.last_insert_id()
    }

    /// Rows the last statement changed.
    pub fn affected_rows(&self) -> u64 {
        self.inner.affected_rows()
    }

    /// Commits (mysql_async sends `COMMIT`; transaction control carries no comment).
    pub async fn commit(self) -> Result<(), mysql_async::Error> {
        self.inner.commit().await
    }

    /// Rolls back; dropping a transaction without either rolls it back too.
    pub async fn rollback(self) -> Result<(), mysql_async::Error> {
        self.inner.rollback().await
    }
}
