//! The bare Pingora baseline with the allocator strangler-proxy ships with (mimalloc), so the
//! benchmark can tell the engine's limit apart from the allocator's share.
//! `bare_pingora_mimalloc LISTEN UPSTREAM THREADS`.

#[path = "common/bare.rs"]
mod bare;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    bare::run();
}
