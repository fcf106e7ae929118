//! Pod metadata from the Kubernetes API, with the real binary against an in-test API server
//! that speaks the list and watch JSON of `GET /api/v1/pods` (objects built with
//! `k8s-openapi`'s types): down at the start, a watch dropped mid-way (resumed from its
//! resourceVersion), a `410 Gone` (listed again), a pod that opts out, and a pod deleted while
//! its last lines are read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use tokio::sync::mpsc;

use crate::harness::binary::{Reaped, sigterm, spawn, wait_exit};

/// The API server's pods and what it was asked.
#[derive(Default)]
struct State {
    pods: Vec<Pod>,
    version: u64,
    /// Refuse every request (503): the API is down.
    down: bool,
    /// Answer the next watch with `410 Gone`.
    expire: bool,
    watches: Vec<mpsc::UnboundedSender<Bytes>>,
    lists: usize,
    watch_requests: usize,
    /// The field selectors asked for.
    selectors: Vec<String>,
}

#[derive(Clone)]
struct Api(Arc<Mutex<State>>);

/// A watch's body: the events as they happen, until the server drops it.
struct Events(mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn event(kind: &str, pod: &Pod) -> Bytes {
    let v = serde_json::json!({"type": kind, "object": pod});
    Bytes::from(format!("{v}\n"))
}

impl Api {
    async fn start() -> (Api, String) {
        let api = Api(Arc::new(Mutex::new(State {
            version: 100,
            ..Default::default()
        })));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let a = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let a = a.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let a = a.clone();
                        async move { Ok::<_, Infallible>(a.answer(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (api, url)
    }

    fn answer(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let mut s = self.0.lock().unwrap();
        let full = |status: u16, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)).boxed())
                .unwrap()
        };
        if s.down || req.uri().path() != "/api/v1/pods" {
            return full(503, "{}".into());
        }
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%3d", "=")))
            .collect();
        s.selectors
            .push(query.get("fieldSelector").cloned().unwrap_or_default());
        if query.get("watch").map(String::as_str) == Some("true") {
            s.watch_requests += 1;
            if std::mem::take(&mut s.expire) {
                let gone = serde_json::json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410}});
                return full(200, format!("{gone}\n"));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            s.watches.push(tx);
            return Response::builder()
                .header("content-type", "application/json")
                .body(Events(rx).boxed())
                .unwrap();
        }
        s.lists += 1;
        let list = serde_json::json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": s.version.to_string()},
            "items": s.pods,
        });
        full(200, list.to_string())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// Adds `pod` (or changes it), telling the watches.
    fn add(&self, mut pod: Pod) {
        self.with(|s| {
            s.version += 1;
            pod.metadata.resource_version = Some(s.version.to_string());
            let uid = pod.metadata.uid.clone();
            s.pods.retain(|p| p.metadata.uid != uid);
            s.pods.push(pod.clone());
            s.watches.retain(|w| w.send(event("ADDED", &pod)).is_ok());
        });
    }

    fn delete(&self, uid: &str) {
        self.with(|s| {
            s.version += 1;
            let Some(i) = s
                .pods
                .iter()
                .position(|p| p.metadata.uid.as_deref() == Some(uid))
            else {
                return;
            };
            let mut pod = s.pods.remove(i);
            pod.metadata.resource_version = Some(s.version.to_string());
            s.watches.retain(|w| w.send(event("DELETED", &pod)).is_ok());
        });
    }

    /// Ends every watch, as a dropped connection does.
    fn drop_watches(&self) {
        self.with(|s| s.watches.clear());
    }
}

/// A Deployment's pod `web-<n>` of namespace `shop` on node-1.
fn pod(uid: &str, name: &str, annotations: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.into()),
            name: Some(name.into()),
            namespace: Some("shop".into()),
            labels: Some(
                [("app", "web"), ("pod-template-hash", "5c8d7f")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-5c8d7f".into(),
                uid: "rs-1".into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Appends CRI lines `<uid>-<n>` to the pod's container log.
fn write(pods: &Path, uid: &str, name: &str, range: std::ops::Range<usize>) {
    use std::io::Write;
    let dir = pods.join(format!("shop_{name}_{uid}/app"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("0.log"))
        .unwrap();
    for n in range {
        writeln!(f, "2026-12-06T10:00:00.000000001Z stdout F {uid}-{n}").unwrap();
    }
}

/// Appends a Java stack trace, then a line `<uid>-after`, to the pod's container log.
fn write_trace(pods: &Path, uid: &str, name: &str) {
    use std::io::Write;
    let path = pods.join(format!("shop_{name}_{uid}/app/0.log"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let t = "2026-12-06T10:00:00.000000001Z stdout F";
    write!(
        f,
        "{t} Exception in thread \"main\" java.lang.IllegalStateException: {uid}\n\
         {t} \tat com.example.App.run(App.java:10)\n\
         {t} \tat com.example.App.main(App.java:5)\n\
         {t} {uid}-after\n"
    )
    .unwrap();
}

/// Each line out so far, by its text: its resource attributes.
fn out(path: &Path) -> HashMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The sink may be writing the last line as this reads: whole lines only.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["record"]["log"].as_str().unwrap().to_string(),
                v["resource"].clone(),
            )
        })
        .collect()
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_their_api_metadata_through_an_outage_a_dropped_watch_and_410_gone() {
    scenario("").await;
}

/// With the disk buffer the metadata is in each read's record, as the lines were read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_disk_buffer_pods_get_their_api_metadata_alike() {
    scenario("[buffer]\ntype = \"disk\"\nmax_bytes = 67108864\n").await;
}

async fn scenario(buffer: &str) {
    let (api, url) = Api::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pods = d.join("pods");
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {url}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n\
             users:\n- name: t\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let sink = d.join("out.jsonl");
    let cfg = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\n{buffer}\
         [sources.probe]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sources.pods]\ntype = \"kubernetes_logs\"\npods_dir = \"{p}\"\npoll_interval_ms = 100\n\
         metadata = \"api\"\nnode_name = \"node-1\"\nkubeconfig = \"{k}\"\nmetadata_wait_ms = 1500\n\
         pod_annotations = [\"team\"]\nready_requires_api = true\n\
         [sinks.out]\ntype = \"file\"\npath = \"{o}\"\n",
        d = d.display(),
        p = pods.display(),
        k = kubeconfig.display(),
        o = sink.display()
    );
    let shown = |line: &str, key: &str| -> Option<String> {
        out(&sink)
            .get(line)
            .and_then(|r| r[key].as_str().map(str::to_string))
    };
    let got = |line: &str| out(&sink).contains_key(line);

    // The API is down at the start: the lines wait their while, then go on with what the
    // path gives.
    api.with(|s| s.down = true);
    write(&pods, "ua", "web-a", 0..3);
    let (child, _, admin, _logs) = spawn(&cfg, d);
    let mut child = Reaped(child);
    wait_until("a's first lines", Duration::from_secs(20), || got("ua-2"));
    assert_eq!(shown("ua-0", "k8s.pod.name").as_deref(), Some("web-a"));
    assert_eq!(shown("ua-0", "k8s.deployment.name"), None, "not known yet");
    let ready = || crate::harness::binary::http_get(&admin, "/ready");
    let not_ready = ready();
    assert!(
        not_ready.contains(" 503 ") && not_ready.contains("Kubernetes API"),
        "ready_requires_api: {not_ready}"
    );

    // The API comes back: the watch lists, and later lines get the pod's metadata.
    api.add(pod("ua", "web-a", &[("team", "payments")]));
    api.with(|s| s.down = false);
    wait_until("the first list", Duration::from_secs(20), || {
        api.with(|s| s.lists) >= 1 && !api.with(|s| s.watches.is_empty())
    });
    write(&pods, "ua", "web-a", 3..5);
    wait_until("a's later lines", Duration::from_secs(20), || got("ua-4"));
    wait_until("ready", Duration::from_secs(20), || {
        ready().contains(" 200 ")
    });
    assert_eq!(shown("ua-4", "k8s.deployment.name").as_deref(), Some("web"));
    assert_eq!(
        shown("ua-4", "k8s.replicaset.name").as_deref(),
        Some("web-5c8d7f")
    );
    assert_eq!(shown("ua-4", "k8s.pod.label.app").as_deref(), Some("web"));
    assert_eq!(
        shown("ua-4", "k8s.pod.annotation.team").as_deref(),
        Some("payments")
    );
    assert_eq!(shown("ua-4", "k8s.pod.uid").as_deref(), Some("ua"));
    assert!(
        api.with(|s| s.selectors.iter().all(|f| f == "spec.nodeName=node-1")),
        "only this node's pods: {:?}",
        api.with(|s| s.selectors.clone())
    );

    // A new pod's file before the API tells of it: its lines wait for it.
    write(&pods, "ub", "web-b", 0..2);
    std::thread::sleep(Duration::from_millis(300));
    api.add(pod("ub", "web-b", &[]));
    wait_until("b's lines", Duration::from_secs(20), || got("ub-1"));
    assert_eq!(shown("ub-0", "k8s.deployment.name").as_deref(), Some("web"));

    // The watch connection drops: it resumes from its resourceVersion (no new list).
    let lists = api.with(|s| s.lists);
    api.drop_watches();
    wait_until("the watch again", Duration::from_secs(20), || {
        !api.with(|s| s.watches.is_empty())
    });
    api.add(pod("uc", "web-c", &[]));
    write(&pods, "uc", "web-c", 0..2);
    wait_until("c's lines", Duration::from_secs(20), || got("uc-1"));
    assert_eq!(shown("uc-0", "k8s.deployment.name").as_deref(), Some("web"));
    assert_eq!(api.with(|s| s.lists), lists, "resumed, not listed again");

    // 410 Gone on the next watch: it lists again, and sees what it missed.
    api.with(|s| s.expire = true);
    api.drop_watches();
    api.add(pod("ud", "web-d", &[]));
    wait_until("a new list", Duration::from_secs(20), || {
        api.with(|s| s.lists) > lists && !api.with(|s| s.watches.is_empty())
    });
    write(&pods, "ud", "web-d", 0..2);
    wait_until("d's lines", Duration::from_secs(20), || got("ud-1"));
    assert_eq!(shown("ud-0", "k8s.deployment.name").as_deref(), Some("web"));

    // A pod that opts out, and a deleted pod whose last lines are read after it went.
    api.add(pod("ue", "web-e", &[("outrigger.io/exclude", "true")]));
    write(&pods, "ue", "web-e", 0..3);
    api.delete("ua");
    std::thread::sleep(Duration::from_millis(200));
    write(&pods, "ua", "web-a", 5..6);
    wait_until("a's last line", Duration::from_secs(20), || got("ua-5"));
    assert_eq!(
        shown("ua-5", "k8s.deployment.name").as_deref(),
        Some("web"),
        "a deleted pod's last lines keep its metadata"
    );
    // Stack-trace joining, off in the configuration, turned on by one pod's annotation.
    api.add(pod("uf", "web-f", &[("outrigger.io/multiline", "true")]));
    api.add(pod("ug", "web-g", &[]));
    std::thread::sleep(Duration::from_millis(200));
    write_trace(&pods, "uf", "web-f");
    write_trace(&pods, "ug", "web-g");
    wait_until("the traces", Duration::from_secs(20), || {
        got("uf-after") && got("ug-after")
    });
    let lines = out(&sink);
    let joined: Vec<&String> = lines.keys().filter(|l| l.contains("App.main")).collect();
    assert_eq!(joined.len(), 2, "{joined:?}");
    let f = joined
        .iter()
        .find(|l| l.contains("IllegalStateException: uf"));
    assert!(
        f.is_some_and(|l| l.contains("App.run") && l.contains("App.main")),
        "f's trace is one event: {joined:?}"
    );
    assert!(
        joined.iter().any(|l| !l.contains("App.run")),
        "g's trace lines stay apart: {joined:?}"
    );
    let metrics = crate::harness::binary::http_get(&admin, "/metrics");
    let excluded = crate::harness::metric_value(
        &metrics,
        "outrigger_source_file_events_total{component=\"pods\",reason=\"excluded\"}",
    );
    assert_eq!(excluded, 3.0, "e's lines left out, counted");
    assert!(!got("ue-0"));
    let missing = crate::harness::metric_value(
        &metrics,
        "outrigger_source_file_events_total{component=\"pods\",reason=\"metadata_missing\"}",
    );
    assert_eq!(missing, 1.0, "only a's file went on without: {metrics}");
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
}
