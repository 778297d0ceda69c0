//! A bare Pingora proxy for the benchmark baseline, with the system allocator (glibc malloc):
//! one fixed peer, no routing, no flags, no metrics. `bare_pingora LISTEN UPSTREAM THREADS`.

#[path = "common/bare.rs"]
mod bare;

fn main() {
    bare::run();
}
