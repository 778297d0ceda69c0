//! What is rendered from the declaration is what the repository runs: the proxy's shop routes
//! file is the declaration's rendering, byte for byte.

use std::path::Path;

use phases::Declaration;

#[test]
fn the_proxy_routes_file_is_rendered_from_the_declaration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let decl = Declaration::load(&root.join("phases/config/shop-domains.toml")).unwrap();
    let file =
        std::fs::read_to_string(root.join("strangler-proxy/config/shop-routes.toml")).unwrap();
    assert!(
        file == decl.proxy_routes_toml(),
        "strangler-proxy/config/shop-routes.toml is stale: run \
         `strangler domains routes > strangler-proxy/config/shop-routes.toml`"
    );
}
