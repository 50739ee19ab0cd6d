//! An in-process fake of the Kubernetes API server's endpoints for Nodes,
//! Namespaces, Pods (all namespaces) and NetworkPolicies (all namespaces),
//! enough for kube-rs' watcher and reflector, driven by the test:
//!
//! - `GET /api/v1/nodes` (`/api/v1/namespaces`, `/api/v1/pods`,
//!   `/apis/networking.k8s.io/v1/networkpolicies`) lists every object of the
//!   kind with the list's resourceVersion;
//! - `...?watch=true&resourceVersion=N` streams that kind's watch events
//!   after N (ADDED, MODIFIED, DELETED, one JSON object a line), then
//!   follows new ones until the server stops; a version older than the
//!   kept history gets the real server's answer, one `ERROR` event with a
//!   `410 Expired` Status, which makes the watcher relist;
//! - `fieldSelector=metadata.name=NAME` narrows a list or watch to objects
//!   of that name (the only field selector it knows);
//! - `GET /api/v1/nodes/NAME` answers the Node or a 404 Status.
//!
//! resourceVersions are one sequence over all kinds, as etcd's.
//!
//! It serves plain HTTP on 127.0.0.1 (or wherever a test's binder puts its
//! listener: another network namespace, say), can stop (every connection closed, as
//! when the API server restarts) and start again on the same port, keeping
//! its objects and history; changes made while stopped are replayed to
//! watches resumed after the restart.

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures::{stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// A Node as the kubelet registers it and the node IPAM controller fills
/// it in: `pod_cidrs` (may be empty: not allocated yet) and an InternalIP.
pub fn node(name: &str, pod_cidrs: &[&str], internal_ip: &str) -> Value {
    let mut spec = json!({});
    if let Some(first) = pod_cidrs.first() {
        spec = json!({ "podCIDR": first, "podCIDRs": pod_cidrs });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "spec": spec,
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": internal_ip },
                { "type": "Hostname", "address": name },
            ],
        },
    })
}

/// The kinds served: resource (plural, as in the URL), kind, list path.
const RESOURCES: [(&str, &str, &str); 4] = [
    ("nodes", "Node", "/api/v1/nodes"),
    ("namespaces", "Namespace", "/api/v1/namespaces"),
    ("pods", "Pod", "/api/v1/pods"),
    (
        "networkpolicies",
        "NetworkPolicy",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ),
];

/// The resource of an object's `kind` (a Node when it has none).
fn resource_of(object: &Value) -> &'static str {
    let kind = object["kind"].as_str().unwrap_or("Node");
    RESOURCES
        .iter()
        .find(|(_, k, _)| *k == kind)
        .unwrap_or_else(|| panic!("the fake serves no {kind}"))
        .0
}

/// An object's key within its resource: "namespace/name" or "name".
fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"]
        .as_str()
        .expect("an object needs metadata.name");
    match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// The uid the fake gives the object `key` ("namespace/name" or "name")
/// created at `version` (what [`FakeApiServer::apply`] returns): like a
/// real one, it is a plain file name.
pub fn uid(key: &str, version: u64) -> String {
    format!("uid-{}-{version}", key.replace('/', "-"))
}

/// A Namespace labelled `labels` (a JSON object); like the real API
/// server, the fake adds no `kubernetes.io/metadata.name`.
pub fn namespace(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    })
}

/// A running Pod on `node` labelled `labels`, with `ips` as its podIPs
/// (none: not wired yet) and one container serving `ports` (a JSON array of
/// container ports).
pub fn pod(ns: &str, name: &str, node: &str, labels: Value, ips: &[&str], ports: Value) -> Value {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
    let mut status = json!({ "phase": "Running" });
    if let Some(first) = ips.first() {
        status["podIP"] = first["ip"].clone();
        status["podIPs"] = Value::Array(ips);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "namespace": ns, "name": name, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "c", "image": "agnhost", "ports": ports }],
        },
        "status": status,
    })
}

/// A NetworkPolicy with `spec` as written in YAML.
pub fn network_policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "namespace": ns, "name": name },
        "spec": spec,
    })
}

/// One watch event, kept in the history and sent to watchers.
#[derive(Debug, Clone)]
struct Event {
    resource_version: u64,
    resource: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Debug)]
struct Store {
    /// The newest resourceVersion handed out.
    version: u64,
    /// By resource, then key.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Events after `compacted`, oldest first.
    history: Vec<Event>,
    /// Watches from before this version get 410 Gone.
    compacted: u64,
    events: broadcast::Sender<Event>,
    /// Every request's path and query, in order (`/api/v1/nodes?limit=500`).
    requests: Vec<String>,
}

impl Store {
    fn record(&mut self, resource: &'static str, kind: &'static str, mut object: Value) -> u64 {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let event = Event {
            resource_version: self.version,
            resource,
            kind,
            object,
        };
        self.history.push(event.clone());
        // No watcher (or the server stopped) is fine: the history keeps it.
        let _ = self.events.send(event);
        self.version
    }
}

/// Makes the server's listening socket for an address (port 0: any).
pub type Binder = Box<dyn Fn(SocketAddr) -> std::io::Result<TcpListener> + Send>;

/// The fake server; stopped (all connections closed) on drop.
pub struct FakeApiServer {
    store: Arc<Mutex<Store>>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    bind: Binder,
}

impl FakeApiServer {
    /// Serves on an ephemeral loopback port.
    pub fn start() -> Self {
        Self::start_with(([127, 0, 0, 1], 0).into(), Box::new(TcpListener::bind))
    }

    /// Serves on the listener `bind` makes for `addr`, and on the one it
    /// makes for the same address and port at every [`Self::restart`].
    pub fn start_with(addr: SocketAddr, bind: Binder) -> Self {
        let listener = bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(Store {
            version: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 1,
            // Far more than a test makes: a lagging watcher would be cut off.
            events: broadcast::channel(1024).0,
            requests: Vec::new(),
        }));
        let mut server = Self {
            store,
            addr,
            runtime: None,
            bind,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let runtime = runtime();
        listener.set_nonblocking(true).unwrap();
        let mut app = Router::new().route("/api/v1/nodes/{name}", get(get_node));
        for (resource, kind, path) in RESOURCES {
            app = app.route(
                path,
                get(move |store, query| list_or_watch(resource, kind, path, store, query)),
            );
        }
        let app = app.with_state(self.store.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        self.runtime = Some(runtime);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig for this server (plain HTTP, no credentials)
    /// into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.write_kubeconfig(dir, "")
    }

    /// [`FakeApiServer::kubeconfig`] with a CA certificate (a fresh
    /// self-signed one), as an in-cluster config always has the service
    /// account's `ca.crt`. The server stays plain HTTP, so the CA is never
    /// used to verify; but kube-rs builds its TLS roots from it rather than
    /// from the system's, and an image without a CA bundle has none.
    pub fn kubeconfig_with_ca(&self, dir: &Path) -> PathBuf {
        use base64::Engine;
        let ca = rcgen::generate_simple_self_signed(["fake-apiserver-ca".to_owned()]).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(ca.cert.pem());
        self.write_kubeconfig(dir, &format!("    certificate-authority-data: {data}\n"))
    }

    /// A kube client of this server, through a kubeconfig written into
    /// `dir` (for code under test that runs in-process).
    pub async fn client(&self, dir: &Path) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig(dir)).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn write_kubeconfig(&self, dir: &Path, cluster_extra: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n{cluster_extra}\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Adds `object` (ADDED) or replaces the object of its kind and name
    /// (MODIFIED); returns the new resourceVersion. Works while stopped
    /// too. Its `kind` says which (Node when it has none).
    pub fn apply(&self, mut object: Value) -> u64 {
        let resource = resource_of(&object);
        let key = key_of(&object);
        let mut store = self.store.lock().unwrap();
        let next = store.version + 1;
        let kind = match store.objects.entry(resource).or_default().get(&key) {
            Some(old) => {
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] =
                    old["metadata"]["creationTimestamp"].clone();
                "MODIFIED"
            }
            None => {
                object["metadata"]["uid"] = json!(uid(&key, next));
                object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                "ADDED"
            }
        };
        let version = store.record(resource, kind, object.clone());
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        store
            .objects
            .entry(resource)
            .or_default()
            .insert(key, object);
        version
    }

    /// Deletes the Node `name` (DELETED, carrying its last state).
    pub fn delete(&self, name: &str) {
        self.delete_object("Node", name);
    }

    /// Deletes the object of `kind` and `key` ("namespace/name" for
    /// namespaced kinds), DELETED carrying its last state.
    pub fn delete_object(&self, kind: &str, key: &str) {
        let resource = resource_of(&json!({ "kind": kind }));
        let mut store = self.store.lock().unwrap();
        let object = store
            .objects
            .entry(resource)
            .or_default()
            .remove(key)
            .unwrap_or_else(|| panic!("no {kind} {key} to delete"));
        store.record(resource, "DELETED", object);
    }

    /// Forgets the watch history, as etcd compaction does: every watch
    /// resumed from an earlier version gets 410 Gone and must relist.
    pub fn compact(&self) {
        let mut store = self.store.lock().unwrap();
        store.history.clear();
        store.compacted = store.version;
    }

    /// Stops serving: the port refuses connections and every open request,
    /// watches included, is cut.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Serves again on the same port, with the same objects and history.
    pub fn restart(&mut self) {
        assert!(self.runtime.is_none(), "restart of a running server");
        let listener =
            (self.bind)(self.addr).unwrap_or_else(|e| panic!("binding {} again: {e}", self.addr));
        self.serve(listener);
    }

    /// How many requests so far were lists of all Nodes (not watches, not
    /// gets, not the policy watch's list of its own Node by name).
    pub fn lists(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.starts_with("/api/v1/nodes")
                    && !r.contains("watch=")
                    && !r.contains("fieldSelector=")
                    && !r.starts_with("/api/v1/nodes/")
            })
            .count()
    }

    /// Every request's path and query so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn event_line(kind: &str, object: &Value) -> Result<Bytes, std::io::Error> {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Ok(Bytes::from(line))
}

/// Whether `object` passes the request's field selector (only
/// `metadata.name=NAME` is known; none passes everything).
fn selected(query: &HashMap<String, String>, object: &Value) -> bool {
    match query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
    {
        Some(name) => object["metadata"]["name"].as_str() == Some(name),
        None => true,
    }
}

async fn list_or_watch(
    resource: &'static str,
    kind: &'static str,
    path: &'static str,
    State(store): State<Arc<Mutex<Store>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut guard = store.lock().unwrap();
    let mut request = path.to_owned();
    let mut keys: Vec<_> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    keys.sort();
    if !keys.is_empty() {
        request = format!("{request}?{}", keys.join("&"));
    }
    guard.requests.push(request);

    if !matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        // Real lists leave out each item's kind and apiVersion.
        let items: Vec<Value> = guard
            .objects
            .get(resource)
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(|o| selected(&query, o))
            .map(|n| {
                let mut n = n.clone();
                let map = n.as_object_mut().unwrap();
                map.remove("kind");
                map.remove("apiVersion");
                n
            })
            .collect();
        let body = json!({
            "kind": format!("{kind}List"),
            "apiVersion": "v1",
            "metadata": { "resourceVersion": guard.version.to_string() },
            "items": items,
        });
        return json_response(StatusCode::OK, &body);
    }

    let Some(from) = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        // kube's watcher always lists first and watches from the list's
        // version; anything else is a test (or fake) bug.
        return json_response(
            StatusCode::BAD_REQUEST,
            &status(
                400,
                "BadRequest",
                "this fake watches only from a resourceVersion".into(),
            ),
        );
    };
    if from < guard.compacted {
        let message = format!("too old resource version: {from} ({})", guard.compacted);
        let body =
            stream::once(async move { event_line("ERROR", &status(410, "Expired", message)) });
        return Response::new(Body::from_stream(body));
    }
    // Under the lock: no event falls between the backlog and the
    // subscription (events are sent with the lock held).
    let backlog: Vec<Event> = guard
        .history
        .iter()
        .filter(|e| e.resource_version > from && e.resource == resource)
        .cloned()
        .collect();
    let live = guard.events.subscribe();
    drop(guard);
    let follow = stream::unfold(live, |mut live| async move {
        // A lagging receiver ends the watch; the client resumes from the
        // last version it saw.
        live.recv().await.ok().map(|e| (e, live))
    });
    let events = stream::iter(backlog)
        .chain(follow)
        .filter(move |e| {
            std::future::ready(
                e.resource_version > from && e.resource == resource && selected(&query, &e.object),
            )
        })
        .map(|e| event_line(e.kind, &e.object));
    Response::new(Body::from_stream(events))
}

async fn get_node(
    State(store): State<Arc<Mutex<Store>>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let mut store = store.lock().unwrap();
    store.requests.push(format!("/api/v1/nodes/{name}"));
    match store.objects.get("nodes").and_then(|n| n.get(&name)) {
        Some(node) => json_response(StatusCode::OK, node),
        None => json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", format!("nodes \"{name}\" not found")),
        ),
    }
}

/// A one-worker tokio runtime: what the server runs on, and what in-process
/// code under test (the agent's watch, with [`FakeApiServer::client`]) runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}
