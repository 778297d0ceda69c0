//! Sticky canaries for users holding user-service's EdDSA tokens: the proxy fetches the JWKS,
//! buckets by the verified `sub`, picks up a rotated key on its own, and never trusts a token it
//! cannot verify.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proxy, Switchboard, Upstream};
use flags::{Context, RouteMode, evaluate};
use service_kit::jwt::{Audience, EdKey, Keyring};

fn signer(kid: &str, seed: u8) -> Keyring {
    Keyring::new(Audience {
        issuer: "shop-monolith".into(),
        audience: "shop".into(),
        ttl_secs: 600,
    })
    .with_key(EdKey::from_seed(kid, &[seed; 32]).unwrap())
    .signing_with(kid)
    .unwrap()
}

#[tokio::test]
async fn eddsa_tokens_bucket_by_their_verified_sub() {
    let (k1, k2) = (signer("k1", 11), signer("k2", 12));
    let published = Arc::new(Mutex::new(k1.jwks()));
    let jwks_app = {
        let published = published.clone();
        axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let published = published.clone();
                async move { axum::Json(published.lock().unwrap().clone()) }
            }),
        )
    };
    let jwks = Upstream::start(jwks_app).await;
    let (m, s) = (Switchboard::default(), Switchboard::default());
    let monolith = Upstream::start(m.app("monolith")).await;
    let service = Upstream::start(s.app("service")).await;
    let body = format!(
        "[upstreams.monolith]\nbackends = [\"{}\"]\n[upstreams.svc]\nbackends = [\"{}\"]\n\n\
         [[routes]]\nname = \"orders\"\nprefix = \"/api/orders\"\nflag = \"route.orders\"\nservice = \"svc\"\n\n\
         [user_key]\njwt_secret = \"0123456789abcdef0123\"\njwt_issuer = \"shop-monolith\"\njwt_audience = \"shop\"\n\
         jwks_url = \"http://{}/.well-known/jwks.json\"\n",
        monolith.addr, service.addr, jwks.addr
    );
    let p = Proxy::start(&body, &["route.orders"]).await;
    p.set_mode("route.orders", RouteMode::Canary { percent: 50.0 })
        .await;
    let flag = RouteMode::Canary { percent: 50.0 }.to_flag("route.orders", 0, "salt");

    let get = |token: String| {
        let (client, url) = (p.client.clone(), p.url("/api/orders/1"));
        async move {
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            let cookie = r.headers().get("set-cookie").is_some();
            let body: serde_json::Value = r.json().await.unwrap();
            (body["served_by"].as_str().unwrap().to_string(), cookie)
        }
    };
    // The JWKS is fetched at start: every user lands where their sub buckets them.
    let started = Instant::now();
    loop {
        let (_, anonymous) = get(k1.issue(1, "u@example.com", "customer").unwrap()).await;
        if !anonymous {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "JWKS never fetched:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut on_service = 0;
    for user in 1..=40u64 {
        let expected = evaluate(&flag, &Context::new(user.to_string()));
        let expected = expected.value.and_then(|v| v.as_str()).unwrap();
        let (side, anonymous) = get(k1.issue(user, "u@example.com", "customer").unwrap()).await;
        assert!(!anonymous, "user {user} treated as anonymous");
        assert_eq!(
            side,
            if expected == "service" {
                "service"
            } else {
                "monolith"
            },
            "user {user}"
        );
        on_service += usize::from(side == "service");
    }
    assert!((8..=32).contains(&on_service), "{on_service}");

    // user-service rotates to k2: its tokens are anonymous only until the proxy, asked by the
    // unknown kid, fetches the JWKS again.
    *published.lock().unwrap() = serde_json::json!({
        "keys": [k1.jwks()["keys"][0], k2.jwks()["keys"][0]]
    });
    let started = Instant::now();
    loop {
        let (_, anonymous) = get(k2.issue(5, "u@example.com", "customer").unwrap()).await;
        if !anonymous {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rotated key never picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A token signed with a key nobody published is never trusted.
    let rogue = signer("k1", 99)
        .issue(5, "u@example.com", "customer")
        .unwrap();
    let (_, anonymous) = get(rogue).await;
    assert!(anonymous);
    assert!(
        p.metrics()
            .await
            .contains("strangler_jwks_fetches_total{result=\"ok\"}")
    );
}
