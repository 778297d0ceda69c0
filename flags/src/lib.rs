//! Feature flags for routing: a LaunchDarkly-compatible flag model and evaluation (same JSON,
//! same bucketing, so a user lands in the same bucket on both backends), route modes on top, and
//! the embedded store — flags in a file or a MySQL table, watched, swapped in atomically.

mod bucket;
mod error;
mod eval;
mod model;
mod route_mode;
pub mod source;
mod store;

pub use bucket::bucket;
pub use error::FlagError;
pub use eval::{Context, Evaluation, Reason, evaluate};
pub use model::{Clause, Flag, Op, Rollout, Rule, Target, VariationOrRollout, WeightedVariation};
pub use route_mode::{ROUTE_VARIATIONS, RouteMode};
pub use store::{FlagSet, FlagStore, StoreStatus};
