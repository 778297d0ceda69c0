//! The container images (`docker/`) and Kubernetes manifests (`kubernetes/`) against the code:
//! both kustomizations rendered by `kubectl kustomize` and checked field by field, then the
//! images run on a Docker network with the rendered settings, as the cluster would run them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use testkit::docker::{Container, ContainerSpec, DockerNetwork};
use testkit::{MariaDb, MariaDbOptions, TempDir, http_get};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// `kubectl kustomize DIR`, every document as JSON.
fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("kubectl is needed to render the manifests (./dev test installs it)");
    testkit::assert_success(&out, &format!("kubectl kustomize {dir}"));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_yaml::Value::deserialize(doc).expect("yaml");
            serde_json::to_value(v).expect("json")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A generated ConfigMap, whose rendered name carries a hash of its content.
fn generated<'a>(docs: &'a [Value], prefix: &str) -> &'a Value {
    of_kind(docs, "ConfigMap")
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")))
        })
        .unwrap_or_else(|| panic!("no generated ConfigMap {prefix}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The images `docker/build-images.sh` builds: its `[name]="binaries"` table.
fn built_images() -> BTreeMap<String, Vec<String>> {
    let script = std::fs::read_to_string(repo().join("docker/build-images.sh")).unwrap();
    script
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (name, bins) = l.strip_prefix('[')?.split_once("]=\"")?;
            let bins = bins.strip_suffix('"')?;
            Some((
                name.to_string(),
                bins.split_whitespace().map(String::from).collect(),
            ))
        })
        .collect()
}

/// Secret name → keys, from the `kubectl create secret generic` commands of kubernetes/README.md.
fn documented_secrets() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(repo().join("kubernetes/README.md")).unwrap();
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in readme.lines() {
        if let Some(rest) = line.split("create secret generic ").nth(1) {
            let name = rest.split_whitespace().next().unwrap().to_string();
            secrets.entry(name.clone()).or_default();
            current = Some(name);
        }
        if let Some(name) = &current {
            for flag in ["--from-literal=", "--from-file="] {
                for part in line.split(flag).skip(1) {
                    let key = part.split('=').next().unwrap().to_string();
                    secrets.get_mut(name).unwrap().insert(key);
                }
            }
        }
        if !line.trim_end().ends_with('\\') {
            current = None;
        }
    }
    secrets
}

/// The TOML block of kubernetes/README.md whose first line is `first`.
fn documented_toml(first: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("kubernetes/README.md")).unwrap();
    let start = readme
        .find(&format!("```toml\n{first}\n"))
        .unwrap_or_else(|| panic!("no config block starting with {first}"))
        + 8;
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

/// cdc-sync's config for the monolith → services stream (Secret `cdc-sync-config`).
fn documented_cdc_config() -> String {
    documented_toml("name = \"monolith-to-services\"")
}

/// The reverse stream's config: the README's header and the `[[tables]]` that
/// `strangler domains streams --direction services-to-monolith` prints, as the README says.
fn documented_reverse_config() -> String {
    let out = Command::new(testkit::workspace_binary("strangler"))
        .args(["domains", "streams", "--direction", "services-to-monolith"])
        .env(
            "STRANGLER_DOMAINS",
            repo().join("phases/config/shop-domains.toml"),
        )
        .output()
        .unwrap();
    let tables = testkit::assert_success(&out, "strangler domains streams");
    format!(
        "{}\n{tables}",
        documented_toml("name = \"services-to-monolith\"")
    )
}

fn documented_events_config() -> String {
    documented_toml("name = \"service-events\"")
}

/// The phase controller's config (Secret `strangler-controller-config`).
fn documented_controller_config() -> String {
    documented_toml("proxies = [\"dns+http://strangler-proxy-admin-pods:8001\"]")
}

/// The environment prefix and source folders of the binary an image runs.
fn binary_sources(image: &str) -> (&'static str, Vec<PathBuf>) {
    let kit = repo().join("services/service-kit/src");
    match image {
        "user-service" => (
            "USER_SVC",
            vec![repo().join("services/user-service/src"), kit],
        ),
        "product-service" => (
            "PRODUCT_SVC",
            vec![repo().join("services/product-service/src"), kit],
        ),
        "order-service" => (
            "ORDER_SVC",
            vec![repo().join("services/order-service/src"), kit],
        ),
        "notification-service" => (
            "NOTIFICATION_SVC",
            vec![repo().join("services/notification-service/src"), kit],
        ),
        "strangler-proxy" => ("STRANGLER", vec![]),
        "cdc-sync" => ("CDC", vec![repo().join("cdc-sync/src")]),
        "strangler" => ("STRANGLER", vec![repo().join("phases/src")]),
        other => panic!("no sources known for {other}"),
    }
}

/// Whether the binary's sources read `name` (whole, or its suffix after the prefix, quoted).
fn reads_variable(sources: &[PathBuf], prefix: &str, name: &str) -> bool {
    let suffix = name.strip_prefix(prefix).unwrap_or(name);
    let wanted = [
        format!("\"{name}\""),
        format!("\"{}\"", suffix.trim_start_matches('_')),
        format!("{suffix}\""),
    ];
    sources.iter().any(|dir| {
        walk(dir).iter().any(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            wanted.iter().any(|w| text.contains(w.as_str()))
        })
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
    files
}

/// The image name (`strangler/<name>`) of a container, without registry and tag.
fn image_name(container: &Value) -> String {
    let image = s(&container["image"]);
    let path = image.rsplit_once(':').map_or(image, |(p, _)| p);
    path.rsplit('/').next().unwrap().to_string()
}

fn pod_containers(deploy: &Value) -> Vec<&Value> {
    let spec = &deploy["spec"]["template"]["spec"];
    let mut all: Vec<&Value> = spec["initContainers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    all.extend(spec["containers"].as_array().expect("containers"));
    all
}

#[test]
fn manifests_agree_with_the_images_and_the_binaries() {
    let base = render("kubernetes/base");
    let prod = render("kubernetes/overlays/production");
    in_the_namespace(&base, "base");
    in_the_namespace(&prod, "production");
    let images = built_images();
    let secrets = documented_secrets();
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 10001:10001"), "the images' user");
    let deployments: Vec<&Value> = of_kind(&base, "Deployment").collect();
    let names: BTreeSet<&str> = deployments
        .iter()
        .map(|d| s(&d["metadata"]["name"]))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "cdc-sync",
            "cdc-sync-events",
            "cdc-sync-reverse",
            "notification-service",
            "order-service",
            "product-service",
            "strangler-controller",
            "strangler-proxy",
            "user-service"
        ])
    );
    for d in &deployments {
        let name = s(&d["metadata"]["name"]);
        assert_eq!(d["metadata"]["namespace"], "strangler", "{name}");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{name}");
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{name}: selector matches its pods");
        }
        for c in pod_containers(d) {
            let cname = s(&c["name"]);
            let image = image_name(c);
            assert!(
                images.contains_key(&image),
                "{name}/{cname}: image {image} is not built by docker/build-images.sh"
            );
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{name}/{cname}"
            );
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{name}/{cname}"
            );
            let (prefix, sources) = binary_sources(&image);
            let ports: BTreeMap<&str, u64> = c["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| (s(&p["name"]), p["containerPort"].as_u64().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            for probe in ["readinessProbe", "livenessProbe"] {
                if cname == "migrate" {
                    continue;
                }
                let get = &c[probe]["httpGet"];
                let port = s(&get["port"]);
                assert!(ports.contains_key(port), "{name}: {probe} port {port}");
                let path = if probe == "readinessProbe" {
                    "/readyz"
                } else {
                    "/healthz"
                };
                assert_eq!(s(&get["path"]), path, "{name}: {probe}");
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let var = s(&e["name"]);
                assert!(
                    var.starts_with(prefix),
                    "{name}/{cname}: {var} is not {prefix}_*"
                );
                if image == "strangler-proxy" {
                    let toml = s(&generated(&base, "strangler-proxy-config")["data"]["proxy.toml"]);
                    assert!(
                        toml.contains(&format!("${{{var}}}")),
                        "{name}: {var} is not used by proxy.toml"
                    );
                } else {
                    assert!(
                        reads_variable(&sources, prefix, var),
                        "{name}/{cname}: the binary does not read {var}"
                    );
                }
                if var.ends_with("_LISTEN") {
                    let port: u64 = s(&e["value"]).rsplit(':').next().unwrap().parse().unwrap();
                    assert_eq!(
                        Some(&port),
                        ports.get("http"),
                        "{name}: {var} vs its http port"
                    );
                }
                if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                    let (sn, key) = (s(&r["name"]), s(&r["key"]));
                    assert!(
                        secrets.get(sn).is_some_and(|keys| keys.contains(key)),
                        "{name}: secret {sn} key {key} is not created by kubernetes/README.md ({secrets:?})"
                    );
                }
                if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
                    let cm = named(&base, "ConfigMap", s(&r["name"]));
                    assert!(
                        cm["data"][s(&r["key"])].is_string(),
                        "{name}: configmap key {}",
                        r["key"]
                    );
                }
            }
        }
        for v in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(sn) = v["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains_key(sn),
                    "{name}: secret {sn} is not documented"
                );
            }
            if let Some(cm) = v["configMap"]["name"].as_str() {
                named(&base, "ConfigMap", cm);
            }
        }
    }
    // Services select pods and name their ports; the monolith's has its Endpoints instead.
    for svc in of_kind(&base, "Service") {
        let name = s(&svc["metadata"]["name"]);
        let Some(selector) = svc["spec"]["selector"].as_object() else {
            assert_eq!(name, "legacy-monolith");
            let ep = named(&base, "Endpoints", name);
            assert_eq!(
                ep["subsets"][0]["ports"][0]["port"],
                svc["spec"]["ports"][0]["port"]
            );
            continue;
        };
        let d = *selected(&base, &Value::Object(selector.clone()))
            .first()
            .unwrap_or_else(|| panic!("service {name} selects no pods"));
        let container_ports: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| s(&p["name"]))
            .collect();
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert!(
                container_ports.contains(&s(&p["targetPort"])),
                "{name}: targetPort {}",
                p["targetPort"]
            );
        }
    }
    // The proxy's ConfigMap: the shop routes and flag seed of strangler-proxy/config, upstreams
    // that are Services of the manifests.
    let cm = &generated(&base, "strangler-proxy-config")["data"];
    let proxy: toml::Value = toml::from_str(s(&cm["proxy.toml"])).unwrap();
    let shop: toml::Value = toml::from_str(
        &std::fs::read_to_string(repo().join("strangler-proxy/config/shop-routes.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        proxy["routes"], shop["routes"],
        "kubernetes/base/strangler-proxy/proxy.toml routes differ from strangler-proxy/config/shop-routes.toml"
    );
    let seed: Value = serde_json::from_str(s(&cm["flags-seed.json"])).unwrap();
    let dev_flags: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("strangler-proxy/config/flags.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        seed, dev_flags,
        "flag seed differs from strangler-proxy/config/flags.json"
    );
    for r in proxy["routes"].as_array().unwrap() {
        let flag = r["flag"].as_str().unwrap();
        assert!(
            seed["flags"][flag].is_object(),
            "route flag {flag} is not seeded"
        );
        assert!(
            proxy["upstreams"]
                .get(r["service"].as_str().unwrap())
                .is_some()
        );
    }
    for (group, host, port) in proxy_backends(&base) {
        let svc = named(&base, "Service", &host);
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == port),
            "upstream {group}: {host} has no port {port}"
        );
    }
    // Production: autoscalers own the replica counts; cdc-sync stays one reader.
    for hpa in of_kind(&prod, "HorizontalPodAutoscaler") {
        let target = s(&hpa["spec"]["scaleTargetRef"]["name"]);
        let d = named(&prod, "Deployment", target);
        assert!(
            d["spec"]["replicas"].is_null(),
            "{target} has an autoscaler and fixed replicas"
        );
        assert!(
            hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2,
            "{target}"
        );
    }
    for stream in ["cdc-sync", "cdc-sync-reverse", "cdc-sync-events"] {
        let cdc = named(&prod, "Deployment", stream);
        assert_eq!(cdc["spec"]["replicas"], 1, "{stream}: one binlog reader");
        assert_eq!(cdc["spec"]["strategy"]["type"], "Recreate", "{stream}");
    }
    assert_eq!(of_kind(&prod, "HorizontalPodAutoscaler").count(), 5);
    for d in of_kind(&prod, "Deployment") {
        for c in pod_containers(d) {
            assert!(
                s(&c["image"]).starts_with("registry.shop.internal/strangler/"),
                "{}",
                c["image"]
            );
        }
    }
    let ep = named(&prod, "Endpoints", "legacy-monolith");
    assert_ne!(
        ep["subsets"][0]["addresses"][0]["ip"], "10.0.0.10",
        "production sets the monolith's address"
    );
    // The dashboard asks only for metrics and labels that the proxy and cdc-sync export.
    let exported = exported_metrics();
    assert!(
        exported["strangler_requests_total"].contains("class"),
        "{exported:?}"
    );
    let dashboard: Value =
        serde_json::from_str(s(
            &named(&base, "ConfigMap", "strangler-dashboards")["data"]["strangler-migration.json"],
        ))
        .unwrap();
    assert_eq!(
        named(&base, "ConfigMap", "strangler-dashboards")["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = s(&target["expr"]);
            let (metrics, labels) = promql_parts(expr);
            assert!(!metrics.is_empty(), "{expr}");
            let mut known = BTreeSet::from(["le".to_string()]);
            for m in &metrics {
                let base_name = family(m, &exported);
                let l = exported
                    .get(base_name)
                    .unwrap_or_else(|| panic!("dashboard: {m} is not exported ({expr})"));
                known.extend(l.iter().cloned());
            }
            for l in &labels {
                assert!(
                    known.contains(l),
                    "dashboard: no label {l} on {metrics:?} ({expr})"
                );
            }
        }
    }
    // The three streams' documented configs parse with cdc-sync's own checker, with distinct
    // reader ids; the controller's with its loader.
    let dir = TempDir::new("cdc-config").unwrap();
    let mut readers = BTreeSet::new();
    for (name, text) in [
        ("cdc-sync", documented_cdc_config()),
        ("cdc-sync-reverse", documented_reverse_config()),
        ("cdc-sync-events", documented_events_config()),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(testkit::workspace_binary("cdc-sync"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .unwrap();
        testkit::assert_success(
            &out,
            &format!("cdc-sync --check-config with {name}'s config"),
        );
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert!(
            readers.insert(parsed["reader_server_id"].as_integer().unwrap()),
            "{name}: reader_server_id shared with another stream"
        );
    }
    let reverse: toml::Value = toml::from_str(&documented_reverse_config()).unwrap();
    assert!(
        reverse["tables"].as_array().is_some_and(|t| t.len() >= 6),
        "the reverse stream carries every domain's tables back: {reverse}"
    );
    let path = dir.path().join("strangler.toml");
    std::fs::write(&path, documented_controller_config()).unwrap();
    let controller =
        phases::ControllerConfig::load(&path).expect("the documented controller config");
    assert_eq!(controller.to_services_stream, "monolith-to-services");
    assert_eq!(controller.to_monolith_stream, "services-to-monolith");
    // The controller's mounts hold what its config names; its declaration is the repo's.
    let ctl = named(&base, "Deployment", "strangler-controller");
    let mounts: Vec<&str> = ctl["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["mountPath"]))
        .collect();
    let stream_config = controller.to_services_config.as_ref().unwrap();
    assert!(
        mounts.iter().any(|m| stream_config.starts_with(m)),
        "{stream_config:?} is not mounted: {mounts:?}"
    );
    assert_eq!(
        s(&generated(&base, "strangler-domains")["data"]["shop-domains.toml"]),
        std::fs::read_to_string(repo().join("phases/config/shop-domains.toml")).unwrap(),
        "kubernetes/base/strangler-controller/shop-domains.toml differs from phases/config/shop-domains.toml"
    );
    let proxy_toml = s(&generated(&base, "strangler-proxy-config")["data"]["proxy.toml"]);
    let proxy: toml::Value = toml::from_str(proxy_toml).unwrap();
    assert_eq!(
        proxy["phases"]["controller"].as_str(),
        Some("http://strangler-controller:9600"),
        "the proxies forward /admin/phases to the controller's Service"
    );
    assert_eq!(
        controller_calls(&base).len(),
        3,
        "the controller's proxies and stream admins are Services of the manifests"
    );
}

/// The calls the phase controller's documented config makes: (Service, port).
fn controller_calls(docs: &[Value]) -> Vec<(String, u64)> {
    service_urls(docs, &documented_controller_config())
}

/// Every namespaced object of a render goes to `strangler` (an object without one would land in
/// whatever namespace `kubectl apply` is pointed at).
fn in_the_namespace(docs: &[Value], render: &str) {
    for d in docs {
        if d["kind"] != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"], "strangler",
                "{render}: {} {} has no namespace",
                d["kind"], d["metadata"]["name"]
            );
        }
    }
}

/// The proxy's upstream backends in its rendered ConfigMap: (group, host, port).
fn proxy_backends(docs: &[Value]) -> Vec<(String, String, u16)> {
    let toml = s(&generated(docs, "strangler-proxy-config")["data"]["proxy.toml"]);
    let proxy: toml::Value = toml::from_str(toml).unwrap();
    let mut out = Vec::new();
    for (group, u) in proxy["upstreams"].as_table().unwrap() {
        for b in u["backends"].as_array().unwrap() {
            let (host, port) = b.as_str().unwrap().rsplit_once(':').unwrap();
            out.push((group.clone(), host.to_string(), port.parse().unwrap()));
        }
    }
    out
}

/// The pods a label selector (`matchLabels` or a Service's map) picks among the Deployments.
fn selected<'a>(docs: &'a [Value], selector: &Value) -> Vec<&'a Value> {
    let selector = selector.as_object().expect("a selector");
    of_kind(docs, "Deployment")
        .filter(|d| {
            selector
                .iter()
                .all(|(k, v)| &d["spec"]["template"]["metadata"]["labels"][k] == v)
        })
        .collect()
}

/// Every `http://host:port` in a text whose host is a Service of the render: (service, port).
fn service_urls(docs: &[Value], text: &str) -> Vec<(String, u64)> {
    text.split("http://")
        .skip(1)
        .filter_map(|rest| {
            let (host, rest) = rest.split_once(':')?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let port: u64 = digits.parse().ok()?;
            of_kind(docs, "Service")
                .any(|s| s["metadata"]["name"] == host)
                .then(|| (host.to_string(), port))
        })
        .collect()
}

/// Who calls whom inside the namespace, from the rendered manifests: every service URL in a
/// Deployment's environment, and the proxy's upstream backends and JWKS URL in its ConfigMap.
/// (caller Deployment, callee Deployment, callee container port.)
fn calls(docs: &[Value]) -> BTreeSet<(String, String, u64)> {
    let mut targets: Vec<(String, (String, u64))> = Vec::new();
    for d in of_kind(docs, "Deployment") {
        let name = s(&d["metadata"]["name"]).to_string();
        for c in pod_containers(d) {
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(v) = e["value"].as_str() {
                    for t in service_urls(docs, v) {
                        targets.push((name.clone(), t));
                    }
                }
            }
        }
    }
    for (_, host, port) in proxy_backends(docs) {
        targets.push(("strangler-proxy".into(), (host, port.into())));
    }
    let toml = s(&generated(docs, "strangler-proxy-config")["data"]["proxy.toml"]);
    for t in service_urls(docs, toml) {
        targets.push(("strangler-proxy".into(), t));
    }
    for t in controller_calls(docs) {
        targets.push(("strangler-controller".into(), t));
    }
    let mut edges = BTreeSet::new();
    for (caller, (svc, port)) in targets {
        let svc = named(docs, "Service", &svc);
        let Some(selector) = svc["spec"].get("selector") else {
            continue; // outside the cluster: the monolith
        };
        let sp = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .unwrap_or_else(|| panic!("{} has no port {port}", svc["metadata"]["name"]));
        for callee in selected(docs, selector) {
            let target = s(&sp["targetPort"]);
            let cport = callee["spec"]["template"]["spec"]["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == target)
                .unwrap()["containerPort"]
                .as_u64()
                .unwrap();
            edges.insert((
                caller.clone(),
                s(&callee["metadata"]["name"]).to_string(),
                cport,
            ));
        }
    }
    edges
}

#[test]
fn istio_overlay_admits_exactly_the_calls_the_code_makes() {
    let mesh = render("kubernetes/overlays/production-istio");
    in_the_namespace(&mesh, "production-istio");
    assert_eq!(
        named(&mesh, "Namespace", "strangler")["metadata"]["labels"]["istio-injection"],
        "enabled"
    );
    let peer: Vec<&Value> = of_kind(&mesh, "PeerAuthentication").collect();
    assert_eq!(peer.len(), 1);
    assert_eq!(peer[0]["spec"]["mtls"]["mode"], "STRICT");
    assert!(
        peer[0]["spec"]["selector"].is_null(),
        "mTLS for the whole namespace"
    );
    // Strict mTLS refuses a cloud load balancer's plaintext: the gateway is the only way in.
    for svc in of_kind(&mesh, "Service") {
        let name = s(&svc["metadata"]["name"]);
        assert!(
            svc["spec"]["type"].is_null() || svc["spec"]["type"] == "ClusterIP",
            "{name} is exposed past the mesh's gateway"
        );
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert_eq!(p["appProtocol"], "http", "{name}: the mesh must see HTTP");
        }
    }
    // Each workload has its own identity, and MariaDB bypasses the sidecar (init containers run
    // before it; the binlog stream outlives its idle timeout).
    let mut accounts = BTreeSet::new();
    for d in of_kind(&mesh, "Deployment") {
        let name = s(&d["metadata"]["name"]);
        let pod = &d["spec"]["template"];
        let sa = s(&pod["spec"]["serviceAccountName"]);
        named(&mesh, "ServiceAccount", sa);
        assert!(accounts.insert(sa), "{name} shares the identity {sa}");
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "{name}");
        let excluded =
            s(&pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"]);
        assert!(excluded.split(',').any(|p| p.trim() == "3306"), "{name}");
    }
    // The authorization policies: each workload selected by exactly one, every call the code
    // makes admitted, and no grant for a call it does not make.
    let edges = calls(&mesh);
    for (caller, callee) in [
        ("strangler-proxy", "user-service"),
        ("strangler-proxy", "order-service"),
        ("order-service", "product-service"),
        ("notification-service", "user-service"),
        ("strangler-proxy", "strangler-controller"),
        ("strangler-controller", "strangler-proxy"),
        ("strangler-controller", "cdc-sync"),
        ("strangler-controller", "cdc-sync-reverse"),
    ] {
        assert!(
            edges.iter().any(|e| e.0 == caller && e.1 == callee),
            "the call graph misses {caller} → {callee}: {edges:?}"
        );
    }
    let sa_of = |deploy: &str| {
        format!(
            "cluster.local/ns/strangler/sa/{}",
            s(
                &named(&mesh, "Deployment", deploy)["spec"]["template"]["spec"]["serviceAccountName"]
            )
        )
    };
    let policies: Vec<&Value> = of_kind(&mesh, "AuthorizationPolicy").collect();
    let policy_of = |deploy: &str| -> &Value {
        let d = named(&mesh, "Deployment", deploy);
        let mine: Vec<&&Value> = policies
            .iter()
            .filter(|p| {
                selected(&mesh, &p["spec"]["selector"]["matchLabels"])
                    .iter()
                    .any(|x| x["metadata"]["name"] == d["metadata"]["name"])
            })
            .collect();
        assert_eq!(mine.len(), 1, "{deploy}: one policy, deny by default");
        assert_eq!(mine[0]["spec"]["action"], "ALLOW", "{deploy}");
        mine[0]
    };
    let admits = |policy: &Value, principal: &str, port: u64| {
        policy["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                let from = r["from"].as_array().into_iter().flatten().any(|f| {
                    let src = &f["source"];
                    src["principals"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p == principal))
                        || src["namespaces"].as_array().is_some_and(|ns| {
                            ns.iter().any(|n| {
                                principal.starts_with(&format!("cluster.local/ns/{}/", s(n)))
                            })
                        })
                });
                let to = r["to"].as_array().is_none_or(|ts| {
                    ts.iter().any(|t| {
                        t["operation"]["ports"]
                            .as_array()
                            .is_none_or(|ps| ps.iter().any(|p| s(p) == port.to_string()))
                    })
                });
                from && to
            })
    };
    for (caller, callee, port) in &edges {
        assert!(
            admits(policy_of(callee), &sa_of(caller), *port),
            "{callee}'s policy refuses {caller} on port {port}"
        );
    }
    for d in of_kind(&mesh, "Deployment") {
        let callee = s(&d["metadata"]["name"]);
        for r in policy_of(callee)["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for f in r["from"].as_array().into_iter().flatten() {
                for p in f["source"]["principals"].as_array().into_iter().flatten() {
                    let Some(sa) = s(p).strip_prefix("cluster.local/ns/strangler/sa/") else {
                        continue;
                    };
                    assert!(
                        edges.iter().any(|(caller, to, _)| to == callee
                            && sa_of(caller).ends_with(&format!("/{sa}"))),
                        "{callee} admits {sa}, which never calls it"
                    );
                }
            }
        }
    }
    // End users: gateway → the proxy's Service → its http port, admitted from the gateway.
    let entry = named(&mesh, "VirtualService", "shop");
    let dest = &entry["spec"]["http"][0]["route"][0]["destination"];
    assert_eq!(
        s(&dest["host"]),
        "strangler-proxy.strangler.svc.cluster.local"
    );
    let proxy_svc = named(&mesh, "Service", "strangler-proxy");
    assert_eq!(
        proxy_svc["spec"]["ports"][0]["port"],
        dest["port"]["number"]
    );
    named(&mesh, "Gateway", s(&entry["spec"]["gateways"][0]));
    assert!(admits(
        policy_of("strangler-proxy"),
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        8000
    ));
    assert!(
        !admits(
            policy_of("strangler-proxy"),
            "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
            8001
        ),
        "the admin port is not public"
    );
    // No mesh retries on anything the proxy sends to: the proxy alone decides what is replayed.
    for (_, host, port) in proxy_backends(&mesh) {
        let fqdn = format!("{host}.strangler.svc.cluster.local");
        let vs = of_kind(&mesh, "VirtualService")
            .find(|v| {
                v["spec"]["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h == fqdn.as_str())
            })
            .unwrap_or_else(|| {
                panic!("no VirtualService for {fqdn}: the mesh's default retries would apply")
            });
        for route in vs["spec"]["http"].as_array().unwrap() {
            assert_eq!(route["retries"]["attempts"], 0, "{fqdn}");
            assert_eq!(s(&route["route"][0]["destination"]["host"]), fqdn);
            assert_eq!(route["route"][0]["destination"]["port"]["number"], port);
        }
    }
    assert_eq!(entry["spec"]["http"][0]["retries"]["attempts"], 0);
    // Nor on the phase controller (a move made twice) or the stream admins it calls.
    let mut no_retries: Vec<(String, u64)> = controller_calls(&mesh)
        .into_iter()
        .filter(|(host, _)| named(&mesh, "Service", host)["spec"]["clusterIP"] != "None")
        .collect();
    no_retries.push(("strangler-controller".into(), 9600));
    for (host, port) in no_retries {
        let fqdn = format!("{host}.strangler.svc.cluster.local");
        let vs = of_kind(&mesh, "VirtualService")
            .find(|v| {
                v["spec"]["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h == fqdn.as_str())
            })
            .unwrap_or_else(|| panic!("no VirtualService for {fqdn}: the mesh would retry"));
        assert_eq!(vs["spec"]["http"][0]["retries"]["attempts"], 0, "{fqdn}");
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["destination"]["port"]["number"],
            port
        );
    }
    // The monolith has no sidecar: plaintext to it.
    let dr = of_kind(&mesh, "DestinationRule")
        .find(|d| d["spec"]["host"] == "legacy-monolith.strangler.svc.cluster.local")
        .expect("a DestinationRule for the monolith");
    assert_eq!(dr["spec"]["trafficPolicy"]["tls"]["mode"], "DISABLE");
}

/// The metric a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` are its own.
fn family<'a>(sample: &'a str, exported: &BTreeMap<String, BTreeSet<String>>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|x| sample.strip_suffix(x))
        .filter(|b| exported.contains_key(*b))
        .unwrap_or(sample)
}

/// Metric name → label names, as `strangler-proxy/src/metrics.rs` and `cdc-sync/src/metrics.rs`
/// register them: each quoted `strangler_…`/`cdc_…` name, with the first `&[…]` list that
/// follows it before the next name.
fn exported_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut metrics = BTreeMap::new();
    for file in ["strangler-proxy/src/metrics.rs", "cdc-sync/src/metrics.rs"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        // Labels the registry puts on every series: `Registry::new_custom(_, Some([("name", …)]))`.
        let registry_labels: BTreeSet<String> = text
            .split_once("Registry::new_custom(")
            .map(|(_, call)| {
                call[..call.find("].into()").expect("const labels as `[…].into()`")]
                    .split("(\"")
                    .skip(1)
                    .map(|l| l[..l.find('"').unwrap()].to_string())
                    .collect()
            })
            .unwrap_or_default();
        let mut names: Vec<(usize, String)> = Vec::new();
        for (at, _) in text.match_indices('"') {
            let rest = &text[at + 1..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if (name.starts_with("strangler_") || name.starts_with("cdc_"))
                && rest[name.len()..].starts_with('"')
            {
                names.push((at, name));
            }
        }
        for (i, (at, name)) in names.iter().enumerate() {
            let end = names.get(i + 1).map_or(text.len(), |n| n.0);
            let mut labels: BTreeSet<String> = text[*at..end]
                .find("&[")
                .map(|l| {
                    let list = &text[at + l + 2..];
                    list[..list.find(']').unwrap()]
                        .split(',')
                        .map(|x| x.trim().trim_matches('"').to_string())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            labels.extend(registry_labels.iter().cloned());
            metrics.insert(name.clone(), labels);
        }
    }
    metrics
}

/// The metric names and label names a PromQL expression uses (labels: in `by (…)` and
/// `{…}` matchers).
fn promql_parts(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let word = |t: &str| -> Vec<String> {
        t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    let metrics = word(expr)
        .into_iter()
        .filter(|w| w.starts_with("strangler_") || w.starts_with("cdc_"))
        .collect();
    let mut labels = BTreeSet::new();
    for part in expr.split("by (").skip(1) {
        labels.extend(word(&part[..part.find(')').unwrap()]));
    }
    for part in expr.split('{').skip(1) {
        let matchers = &part[..part.find('}').unwrap()];
        for m in matchers.split(',') {
            labels.extend(word(m.split(['=', '!']).next().unwrap()));
        }
    }
    (metrics, labels)
}

/// A binary of the workspace's test build (`cargo test --workspace` builds them all).
fn wait_ready(c: &Container, port: u16, path: &str) {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(c.ip(), port, path) {
            return;
        }
        assert!(
            c.is_running() && started.elapsed() < Duration::from_secs(90),
            "{} never answered {path} 200:\n{}",
            c.name(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A container's environment from the manifest, Secrets and ConfigMaps resolved.
fn resolved_env(
    container: &Value,
    secrets: &BTreeMap<(&str, &str), String>,
    docs: &[Value],
) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                secrets[&(s(&r["name"]), s(&r["key"]))].clone()
            } else {
                let r = &e["valueFrom"]["configMapKeyRef"];
                s(&named(docs, "ConfigMap", s(&r["name"]))["data"][s(&r["key"])]).to_string()
            };
            (s(&e["name"]).to_string(), value)
        })
        .collect()
}

/// The pod's containers as Docker runs them: its user, read-only root, `emptyDir` as tmpfs,
/// ConfigMap and Secret volumes as read-only folders from `volumes`.
fn spec_for(
    deploy: &Value,
    container: &Value,
    tag: &str,
    env: Vec<(String, String)>,
    volumes: &BTreeMap<String, PathBuf>,
) -> ContainerSpec {
    let pod = &deploy["spec"]["template"]["spec"];
    let mut spec = ContainerSpec {
        image: format!("strangler/{}:{tag}", image_name(container)),
        name: s(&deploy["metadata"]["name"]).to_string(),
        args: container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| s(a).to_string())
            .collect(),
        env,
        user: Some(format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
        )),
        read_only: container["securityContext"]["readOnlyRootFilesystem"] == true,
        ..Default::default()
    };
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let vol = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        let at = s(&m["mountPath"]).to_string();
        if vol["emptyDir"].is_object() {
            spec.tmpfs.push(at);
        } else {
            let key = vol["configMap"]["name"]
                .as_str()
                .or(vol["secret"]["secretName"].as_str())
                .unwrap();
            spec.mounts.push((volumes[key].clone(), at));
        }
    }
    spec
}

#[test]
fn images_run_the_manifests_on_a_container_network() {
    let base = render("kubernetes/base");
    let tag = format!("test-{}", std::process::id());
    let image_base =
        std::env::var("STRANGLER_IMAGE_BASE").unwrap_or_else(|_| "debian:bookworm-slim".into());
    let net = DockerNetwork::create("deploy").expect("docker network");
    let built = Command::new(repo().join("docker/build-images.sh"))
        .args(["--tag", &tag, "--base", &image_base, "--bin-dir"])
        .arg(
            testkit::workspace_binary("strangler-proxy")
                .parent()
                .unwrap(),
        )
        .output()
        .unwrap();
    let built = testkit::assert_success(&built, "docker/build-images.sh");
    let _images = ImagesGuard(built.lines().map(String::from).collect());

    // Two private MariaDB servers, the monolith's and the services', reachable from the containers
    // through the gateway.
    let start_db = |name: &str, id: u32| {
        let mut options = MariaDbOptions::new(name, id);
        options.extra_args.push("--bind-address=0.0.0.0".into());
        MariaDb::start(options).unwrap()
    };
    let (monolith_db, services_db) = (start_db("deploy", 7101), start_db("deploy-svc", 7102));
    let sql_on = |db: &MariaDb, q: &str| {
        let out = Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                "-uroot",
                &format!("-P{}", db.port()),
                "-e",
                q,
            ])
            .output()
            .unwrap();
        testkit::assert_success(&out, q)
    };
    for db in [&monolith_db, &services_db] {
        sql_on(
            db,
            "CREATE USER 'strangler'@'%' IDENTIFIED BY 'deploy-test-pw'; \
             GRANT ALL PRIVILEGES ON *.* TO 'strangler'@'%' WITH GRANT OPTION; \
             CREATE DATABASE shop; CREATE DATABASE strangler;",
        );
    }
    let on = |db: &MariaDb, db_name: &str| {
        format!(
            "mysql://strangler:deploy-test-pw@{}:{}/{db_name}",
            net.gateway(),
            db.port()
        )
    };
    let url = |db_name: &str| on(&services_db, db_name);
    let shop_url = on(&monolith_db, "shop");
    let sql = |q: &str| sql_on(&services_db, q);
    let jwt = "deploy-test-legacy-jwt-secret-0123456789";
    let operator = "deploy-test-operator-token";
    let secret_values: BTreeMap<(&str, &str), String> = BTreeMap::from([
        (("strangler-databases", "user-service"), url("user_svc")),
        (
            ("strangler-databases", "product-service"),
            url("product_svc"),
        ),
        (("strangler-databases", "order-service"), url("order_svc")),
        (
            ("strangler-databases", "notification-service"),
            url("notification_svc"),
        ),
        (("strangler-databases", "flags"), url("strangler")),
        (("strangler-databases", "controller"), url("strangler")),
        (("strangler-tokens", "jwt-legacy-secret"), jwt.to_string()),
        (
            ("strangler-tokens", "internal-token"),
            "deploy-test-internal-token-0123456789".into(),
        ),
        (
            ("strangler-tokens", "proxy-operator-token"),
            operator.into(),
        ),
        (
            ("strangler-tokens", "proxy-viewer-token"),
            "deploy-test-viewer-token".into(),
        ),
        (
            ("strangler-tokens", "controller-token"),
            "deploy-test-controller-token".into(),
        ),
        (
            ("strangler-tokens", "phases-api-token"),
            "deploy-test-phases-api-token".into(),
        ),
    ]);
    for (name, key) in secret_values.keys() {
        assert!(documented_secrets()[*name].contains(*key), "{name}/{key}");
    }

    // The monolith (on EC2 in production): seeded, answering as `legacy-monolith`.
    let monolith_env = vec![
        ("SHOP_DATABASE_URL".to_string(), shop_url.clone()),
        ("SHOP_LISTEN".into(), "0.0.0.0:8080".into()),
        ("SHOP_JWT_SECRET".into(), jwt.into()),
        ("SHOP_ID_STEP".into(), "2".into()),
        ("SHOP_ID_OFFSET".into(), "1".into()),
    ];
    let monolith_spec = |args: &[&str]| ContainerSpec {
        image: format!("strangler/legacy-monolith:{tag}"),
        name: "legacy-monolith".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: monolith_env.clone(),
        user: Some("10001:10001".into()),
        read_only: true,
        ..Default::default()
    };
    net.run_to_end(&monolith_spec(&[
        "seed",
        "--users",
        "20",
        "--products",
        "30",
        "--orders",
        "10",
    ]))
    .expect("seeding the monolith");
    let monolith = net.start(&monolith_spec(&["serve"])).unwrap();
    wait_ready(&monolith, 8080, "/readyz");

    // Volumes: the proxy's ConfigMap as rendered, cdc-sync's Secret from the README's template.
    let files = TempDir::new("deploy-volumes").unwrap();
    let mut volumes = BTreeMap::new();
    let proxy_cm = generated(&base, "strangler-proxy-config");
    let dir = files.path().join("proxy");
    std::fs::create_dir_all(&dir).unwrap();
    for (k, v) in proxy_cm["data"].as_object().unwrap() {
        std::fs::write(dir.join(k), s(v)).unwrap();
    }
    volumes.insert(s(&proxy_cm["metadata"]["name"]).to_string(), dir);
    // The Secrets' files from the README's templates, with this test's servers and tokens.
    let (monolith_root, services_root) = (on(&monolith_db, ""), url(""));
    let servers = |text: String| {
        text.replace(
            "mysql://cdc:PASSWORD@monolith-db.shop.internal:3306/shop",
            &shop_url,
        )
        .replace(
            "mysql://cdc:PASSWORD@monolith-db.shop.internal:3306/",
            &monolith_root,
        )
        .replace(
            "mysql://cdc:PASSWORD@services-db.shop.internal:3306/",
            &services_root,
        )
        .replace(
            "mysql://cdc:PASSWORD@monolith-db.shop.internal:3306",
            monolith_root.trim_end_matches('/'),
        )
        .replace(
            "mysql://cdc:PASSWORD@services-db.shop.internal:3306",
            services_root.trim_end_matches('/'),
        )
        .replace(
            "THE-CONTROLLER-OPERATOR-TOKEN",
            &secret_values[&("strangler-tokens", "controller-token")],
        )
        .replace(
            "THE-PHASES-API-TOKEN",
            &secret_values[&("strangler-tokens", "phases-api-token")],
        )
    };
    for (secret, file, text) in [
        ("cdc-sync-config", "cdc-sync.toml", documented_cdc_config()),
        (
            "cdc-sync-reverse-config",
            "cdc-sync.toml",
            documented_reverse_config(),
        ),
        (
            "cdc-sync-events-config",
            "cdc-sync.toml",
            documented_events_config(),
        ),
        (
            "strangler-controller-config",
            "strangler.toml",
            documented_controller_config(),
        ),
    ] {
        let text = servers(text);
        assert!(
            !text.contains("PASSWORD") && !text.contains("THE-"),
            "{text}"
        );
        let dir = files.path().join(secret);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
        volumes.insert(secret.to_string(), dir);
    }
    let domains_cm = generated(&base, "strangler-domains");
    let dir = files.path().join("domains");
    std::fs::create_dir_all(&dir).unwrap();
    for (k, v) in domains_cm["data"].as_object().unwrap() {
        std::fs::write(dir.join(k), s(v)).unwrap();
    }
    volumes.insert(s(&domains_cm["metadata"]["name"]).to_string(), dir);
    for p in std::fs::read_dir(files.path()).unwrap().flatten() {
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(p.path())
            .status();
    }

    // The services, then the streams and the phase controller, then the proxy: each pod's init
    // containers to their end, then its main container, until /readyz answers. Each answers to
    // the names of the Services that select it.
    let mut running: Vec<Container> = Vec::new();
    for name in [
        "user-service",
        "product-service",
        "order-service",
        "notification-service",
        "cdc-sync",
        "cdc-sync-reverse",
        "cdc-sync-events",
        "strangler-controller",
        "strangler-proxy",
    ] {
        let d = named(&base, "Deployment", name);
        let pod = &d["spec"]["template"]["spec"];
        for init in pod["initContainers"].as_array().into_iter().flatten() {
            let mut spec = spec_for(
                d,
                init,
                &tag,
                resolved_env(init, &secret_values, &base),
                &volumes,
            );
            spec.name = format!("{name}-{}", s(&init["name"]));
            net.run_to_end(&spec)
                .unwrap_or_else(|e| panic!("{name}: init container {}: {e}", init["name"]));
        }
        let main = &pod["containers"][0];
        let mut spec = spec_for(
            d,
            main,
            &tag,
            resolved_env(main, &secret_values, &base),
            &volumes,
        );
        spec.aliases = of_kind(&base, "Service")
            .filter(|svc| {
                svc["spec"]["selector"].is_object()
                    && selected(&base, &svc["spec"]["selector"])
                        .iter()
                        .any(|x| x["metadata"]["name"] == d["metadata"]["name"])
            })
            .map(|svc| s(&svc["metadata"]["name"]).to_string())
            .filter(|n| n != name)
            .collect();
        let c = net.start(&spec).unwrap();
        let probe = &main["readinessProbe"]["httpGet"];
        let port = main["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == probe["port"])
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap() as u16;
        wait_ready(&c, port, s(&probe["path"]));
        running.push(c);
    }
    let proxy = running.last().unwrap();
    let cdc = &running[4];
    let controller = &running[7];

    // Through the proxy: the monolith answers; the catalog reaches product-service by a backfill
    // through the running stream; after the flip with stranglerctl, product-service answers alike.
    let (status, from_monolith) = http_get(proxy.ip(), 8000, "/api/products/1").unwrap();
    assert_eq!(status, 200, "{from_monolith}");
    for table in ["shop.products", "shop.inventory"] {
        cdc.exec(
            &[
                "/usr/local/bin/cdc-sync",
                "backfill",
                "--table",
                table,
                "--config",
                "/etc/cdc-sync/cdc-sync.toml",
            ],
            &[],
        )
        .unwrap_or_else(|e| panic!("backfill {table}: {e}"));
    }
    let out = proxy
        .exec(
            &[
                "stranglerctl",
                "flag",
                "set",
                "products.one",
                "--mode",
                "service",
                "--reason",
                "deployment test",
            ],
            &[("STRANGLER_ADMIN_TOKEN", operator)],
        )
        .unwrap();
    assert!(out.contains("-> service"), "{out}");
    let started = Instant::now();
    loop {
        let (status, body) = http_get(proxy.ip(), 8000, "/api/products/1").unwrap();
        let routes = proxy
            .exec(
                &["stranglerctl", "--json", "routes"],
                &[("STRANGLER_ADMIN_TOKEN", operator)],
            )
            .unwrap();
        let moved: Value = serde_json::from_str(&routes).unwrap();
        let mode = moved["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "products.one")
            .map(|r| r["mode"].clone());
        if mode == Some(Value::from("service")) {
            // Two implementations: the same JSON, not necessarily the same key order.
            let json = |b: &str| serde_json::from_str::<Value>(b).unwrap_or(Value::from(b));
            assert_eq!(
                (status, json(&body)),
                (200, json(&from_monolith)),
                "product-service answers as the monolith did"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "route never moved: {routes}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let served = sql("SELECT COUNT(*) FROM product_svc.products");
    assert!(
        served.lines().nth(1).is_some_and(|n| n.trim() == "30"),
        "{served}"
    );
    // The migration phases through the proxy's admin API, forwarded to the phase controller with
    // the Secrets' tokens: every declared domain, and a plan it computes for one.
    let status = proxy
        .exec(
            &["stranglerctl", "--json", "phase", "status"],
            &[("STRANGLER_ADMIN_TOKEN", operator)],
        )
        .unwrap_or_else(|e| panic!("stranglerctl phase status: {e}\n{}", controller.logs()));
    let status: Value = serde_json::from_str(&status).unwrap();
    let domains: BTreeSet<&str> = status["domains"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .map(|d| s(&d["domain"]))
        .collect();
    assert_eq!(
        domains,
        BTreeSet::from(["notifications", "orders", "products", "users"]),
        "{status}"
    );
    let (code, metrics) = http_get(controller.ip(), 9600, "/metrics").unwrap();
    assert_eq!(code, 200, "{metrics}");
    // What the running proxy and cdc-sync export is what the dashboard check read from their
    // sources: every series they serve by now has a known name and exactly its known labels.
    let exported = exported_metrics();
    let mut seen = BTreeSet::new();
    for (c, port) in [(proxy, 8001), (cdc, 9500)] {
        let (status, text) = http_get(c.ip(), port, "/metrics").unwrap();
        assert_eq!(status, 200, "{text}");
        for (name, labels) in testkit::prometheus::series(&text) {
            if !(name.starts_with("strangler_") || name.starts_with("cdc_")) {
                continue;
            }
            let base = family(&name, &exported);
            let known = exported
                .get(base)
                .unwrap_or_else(|| panic!("{base} is served but not found in metrics.rs"));
            let unique: BTreeSet<&String> = labels.iter().collect();
            assert_eq!(
                unique.len(),
                labels.len(),
                "{name}: a label twice in one series"
            );
            let labels: BTreeSet<String> = labels.into_iter().filter(|l| l != "le").collect();
            assert_eq!(
                &labels, known,
                "{base}: labels served vs read from metrics.rs"
            );
            seen.insert(base.to_string());
        }
    }
    for m in [
        "strangler_requests_total",
        "strangler_config_version",
        "cdc_running",
    ] {
        assert!(seen.contains(m), "{m} not served: {seen:?}");
    }
}

/// Removes the test's images at the end.
struct ImagesGuard(Vec<String>);

impl Drop for ImagesGuard {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}
