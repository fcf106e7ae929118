//! Pod metadata from the Kubernetes API, for `kubernetes_logs` with `metadata = "api"`.
//!
//! One task watches this node's pods (`fieldSelector=spec.nodeName=<node>`: a list, then a
//! watch from its `resourceVersion`, resumed after a dropped connection and listed again
//! after `410 Gone`, as `kube`'s watcher does) and keeps, per pod UID, only what lines get:
//! the owners' names, labels, the configured annotations, and whether the pod or a container
//! opted out. The file source looks a file's pod up by the UID in its path ([`Pods::get`]).
//!
//! Ingestion never waits on the API for long: a pod the API has not told of yet (just
//! started, or the API is down) has its file left unread for at most `metadata_wait_ms`
//! (the file holds the lines meanwhile: nothing is held in memory), then read with what the
//! path gives. A deleted pod is remembered for [`RETAIN`], so its last lines still get its
//! metadata.
//!
//! The attributes are OpenTelemetry's names: `k8s.replicaset.name` and
//! `k8s.deployment.name` (the ReplicaSet's name less the pod's `pod-template-hash`, so
//! ReplicaSets need not be watched), `k8s.statefulset.name`, `k8s.daemonset.name`,
//! `k8s.job.name`, `k8s.cronjob.name` (a Job named `<cronjob>-<scheduled minute>`),
//! `k8s.pod.label.<key>`, `k8s.pod.annotation.<key>`.
//!
//! Opting out: `outrigger.io/exclude: "true"` on a pod leaves its lines out (counted as
//! `excluded`), `outrigger.io/exclude-<container>: "true"` one container's. Stack-trace
//! joining (`[enrich.multiline]`) is turned on or off for a pod's lines by
//! `outrigger.io/multiline: "true"` or `"false"`, for one container's by
//! `outrigger.io/multiline-<container>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::config::file::Pods as Config;
use crate::telemetry::SourceMetrics;
use crate::telemetry::logging::RateLimit;

/// How long a deleted pod's metadata is kept for its last lines.
pub const RETAIN: Duration = Duration::from_secs(300);

/// The annotation that leaves a pod's lines out; with `-<container>` after it, one
/// container's.
pub const EXCLUDE: &str = "outrigger.io/exclude";

/// The annotation that turns stack-trace joining on or off for a pod's lines; with
/// `-<container>` after it, one container's.
pub const MULTILINE: &str = "outrigger.io/multiline";

/// What lines of one pod get.
#[derive(Debug, PartialEq, Eq)]
pub struct Meta {
    /// Resource attributes, in a fixed order.
    pub resource: Arc<[(Bytes, Bytes)]>,
    /// The whole pod opted out.
    pub exclude: bool,
    /// Containers that opted out.
    pub exclude_containers: Vec<String>,
    /// Stack-trace joining as the pod asks, and as each container asks (over the pod).
    pub multiline: Option<bool>,
    pub multiline_containers: Vec<(String, bool)>,
}

impl Meta {
    /// Whether lines of `container` are joined into stack traces: `None` as configured.
    pub fn multiline(&self, container: &str) -> Option<bool> {
        let own = self
            .multiline_containers
            .iter()
            .find(|(c, _)| c == container);
        own.map(|(_, on)| *on).or(self.multiline)
    }

    /// Whether lines of `container` are left out.
    pub fn excludes(&self, container: &str) -> bool {
        self.exclude || self.exclude_containers.iter().any(|c| c == container)
    }
}

/// What [`Pods::get`] knows of a pod.
#[derive(Debug, Clone)]
pub enum Lookup {
    Known(Arc<Meta>),
    /// Not (yet) told of it.
    Unknown,
}

/// This node's pods, as the watch last said.
#[derive(Debug)]
pub struct Pods {
    config: Config,
    state: Mutex<State>,
    /// The watch has listed and runs (readiness, with `ready_requires_api`).
    pub up: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct State {
    /// By UID: the metadata, and since when the pod is gone.
    pods: HashMap<String, (Arc<Meta>, Option<Instant>)>,
    /// UIDs seen since the watch began listing again, to find those deleted meanwhile.
    listing: Option<Vec<String>>,
}

impl Pods {
    pub fn new(config: Config) -> Arc<Pods> {
        Arc::new(Pods {
            config,
            state: Mutex::new(State::default()),
            up: Arc::new(AtomicBool::new(false)),
        })
    }

    /// What is known of the pod with UID `uid`.
    pub fn get(&self, uid: &str) -> Lookup {
        let state = self.state.lock().expect("never poisoned");
        match state.pods.get(uid) {
            Some((meta, _)) => Lookup::Known(meta.clone()),
            None => Lookup::Unknown,
        }
    }

    /// How long a pod's lines wait for it to be known.
    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.config.wait_ms)
    }

    /// Takes in one event of the watch.
    pub fn apply(&self, event: Event<Pod>) {
        let mut state = self.state.lock().expect("never poisoned");
        let now = Instant::now();
        state
            .pods
            .retain(|_, (_, gone)| gone.is_none_or(|at| now.duration_since(at) < RETAIN));
        match event {
            Event::Init => state.listing = Some(Vec::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    return;
                };
                if let Some(seen) = &mut state.listing {
                    seen.push(uid.clone());
                }
                let meta = Arc::new(meta(&pod, &self.config));
                state.pods.insert(uid, (meta, None));
            }
            Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid
                    && let Some((_, gone)) = state.pods.get_mut(uid)
                {
                    *gone = Some(now);
                }
            }
            Event::InitDone => {
                // Pods not in the new list were deleted while the watch was down.
                let seen: std::collections::HashSet<String> = state
                    .listing
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                for (uid, (_, gone)) in state.pods.iter_mut() {
                    if !seen.contains(uid) && gone.is_none() {
                        *gone = Some(now);
                    }
                }
                self.up.store(true, Ordering::Release);
            }
        }
    }

    /// Watches the node's pods until dropped (the task is aborted with its source): connects
    /// (kubeconfig, or in the cluster the service account), lists, watches; after an error
    /// tries again with a backoff, counting `api_error`. Lines never wait on this.
    pub async fn watch(self: Arc<Pods>, source: String, metrics: SourceMetrics) {
        let warn = RateLimit::new(5);
        let mut backoff = Retry::default();
        let client = loop {
            match client(&self.config).await {
                Ok(c) => break c,
                Err(e) => {
                    metrics.file_event("api_error", 1);
                    if let Some(suppressed) = warn.allow() {
                        tracing::warn!(source = %source, error = %e, suppressed, "Kubernetes API: no client; lines go on with the metadata their paths give, trying again");
                    }
                    let wait = backoff.next().unwrap_or(Retry::MAX);
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let api: kube::Api<Pod> = kube::Api::all(client);
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let config = watcher::Config::default().fields(&selector).any_semantic();
        let stream = watcher::watcher(api, config).backoff(Retry::default());
        let mut stream = std::pin::pin!(stream);
        tracing::info!(source = %source, node = %self.config.node_name, "Kubernetes API: watching this node's pods");
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => self.apply(event),
                Err(e) => {
                    self.up.store(false, Ordering::Release);
                    metrics.file_event("api_error", 1);
                    if let Some(suppressed) = warn.allow() {
                        tracing::warn!(source = %source, error = %e, suppressed, "Kubernetes API: watching pods failed; lines go on with what is known, trying again");
                    }
                }
            }
        }
    }
}

/// A client from the configured kubeconfig, or as `kube` infers it (`KUBECONFIG`, then the
/// in-cluster service account).
async fn client(config: &Config) -> anyhow::Result<kube::Client> {
    let c = match &config.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(c)?)
}

/// What lines of `pod` get.
fn meta(pod: &Pod, config: &Config) -> Meta {
    let m = &pod.metadata;
    let mut out: Vec<(Bytes, Bytes)> = Vec::new();
    let mut push = |k: String, v: &str| out.push((Bytes::from(k), Bytes::from(v.to_string())));
    let labels = m.labels.clone().unwrap_or_default();
    for owner in m.owner_references.iter().flatten() {
        let name = owner.name.as_str();
        match owner.kind.as_str() {
            "ReplicaSet" => {
                push("k8s.replicaset.name".into(), name);
                let hash = labels.get("pod-template-hash");
                let deployment = match hash {
                    Some(h) => name
                        .strip_suffix(h.as_str())
                        .and_then(|n| n.strip_suffix('-')),
                    None => name.rsplit_once('-').map(|(d, _)| d),
                };
                if let Some(d) = deployment.filter(|d| !d.is_empty()) {
                    push("k8s.deployment.name".into(), d);
                }
            }
            "StatefulSet" => push("k8s.statefulset.name".into(), name),
            "DaemonSet" => push("k8s.daemonset.name".into(), name),
            "Job" => {
                push("k8s.job.name".into(), name);
                // A CronJob names its Jobs `<cronjob>-<minutes since the epoch>`.
                if let Some((cron, minute)) = name.rsplit_once('-')
                    && minute.len() >= 8
                    && minute.bytes().all(|b| b.is_ascii_digit())
                {
                    push("k8s.cronjob.name".into(), cron);
                }
            }
            _ => {}
        }
    }
    if config.labels {
        for (k, v) in &labels {
            push(format!("k8s.pod.label.{k}"), v);
        }
    }
    let annotations = m.annotations.clone().unwrap_or_default();
    for key in &config.annotations {
        if let Some(v) = annotations.get(key) {
            push(format!("k8s.pod.annotation.{key}"), v);
        }
    }
    let yes = |v: &String| v.eq_ignore_ascii_case("true");
    let exclude = annotations.get(EXCLUDE).is_some_and(yes);
    let exclude_containers = annotations
        .iter()
        .filter(|(_, v)| yes(v))
        .filter_map(|(k, _)| k.strip_prefix(EXCLUDE)?.strip_prefix('-'))
        .map(str::to_string)
        .collect();
    let switch = |v: &String| match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    let multiline = annotations.get(MULTILINE).and_then(switch);
    let multiline_containers = annotations
        .iter()
        .filter_map(|(k, v)| {
            let c = k.strip_prefix(MULTILINE)?.strip_prefix('-')?;
            Some((c.to_string(), switch(v)?))
        })
        .collect();
    Meta {
        resource: out.into(),
        exclude,
        exclude_containers,
        multiline,
        multiline_containers,
    }
}

/// Waits between attempts: 200 ms, doubling to [`Retry::MAX`]; from the start again once an
/// attempt worked.
#[derive(Debug, Clone, Copy)]
struct Retry {
    next: Duration,
}

impl Retry {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { next: Retry::MIN }
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Retry::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {
        self.next = Retry::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn config() -> Config {
        Config {
            node_name: "n1".into(),
            kubeconfig: None,
            labels: true,
            annotations: vec!["team".into()],
            wait_ms: 2000,
            ready_requires_api: false,
        }
    }

    fn pod(uid: &str, owner: (&str, &str), labels: &[(&str, &str)], notes: &[(&str, &str)]) -> Pod {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(format!("pod-{uid}")),
                namespace: Some("shop".into()),
                labels: map(labels),
                annotations: map(notes),
                owner_references: Some(vec![OwnerReference {
                    kind: owner.0.into(),
                    name: owner.1.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn attrs(m: &Meta) -> Vec<(String, String)> {
        m.resource
            .iter()
            .map(|(k, v)| {
                let s = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
                (s(k), s(v))
            })
            .collect()
    }

    #[test]
    fn owners_labels_and_chosen_annotations_become_attributes() {
        let p = pod(
            "u1",
            ("ReplicaSet", "web-7d9f8b6c5"),
            &[("app", "web"), ("pod-template-hash", "7d9f8b6c5")],
            &[("team", "payments"), ("other", "x")],
        );
        let m = meta(&p, &config());
        let want = [
            ("k8s.replicaset.name", "web-7d9f8b6c5"),
            ("k8s.deployment.name", "web"),
            ("k8s.pod.label.app", "web"),
            ("k8s.pod.label.pod-template-hash", "7d9f8b6c5"),
            ("k8s.pod.annotation.team", "payments"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(attrs(&m), want);
        assert!(!m.excludes("app"));

        let job = meta(&pod("u2", ("Job", "report-29412345"), &[], &[]), &config());
        assert_eq!(
            attrs(&job),
            [
                ("k8s.job.name".to_string(), "report-29412345".to_string()),
                ("k8s.cronjob.name".into(), "report".into())
            ]
        );
        let plain = meta(&pod("u3", ("Job", "migrate-2"), &[], &[]), &config());
        assert_eq!(attrs(&plain).len(), 1, "not a CronJob's");
    }

    #[test]
    fn a_pod_or_one_container_opts_out_by_annotation() {
        let all = meta(
            &pod("u1", ("DaemonSet", "x"), &[], &[(EXCLUDE, "true")]),
            &config(),
        );
        assert!(all.excludes("app") && all.excludes("sidecar"));
        let key = format!("{EXCLUDE}-istio-proxy");
        let one = meta(
            &pod("u1", ("DaemonSet", "x"), &[], &[(key.as_str(), "True")]),
            &config(),
        );
        assert!(one.excludes("istio-proxy") && !one.excludes("app"));
    }

    #[test]
    fn a_pod_or_one_container_turns_stack_trace_joining_on_or_off() {
        let key = format!("{MULTILINE}-sidecar");
        let m = meta(
            &pod(
                "u1",
                ("DaemonSet", "x"),
                &[],
                &[(MULTILINE, "true"), (key.as_str(), "false")],
            ),
            &config(),
        );
        assert_eq!(m.multiline("app"), Some(true));
        assert_eq!(m.multiline("sidecar"), Some(false));
        let plain = meta(&pod("u2", ("DaemonSet", "x"), &[], &[]), &config());
        assert_eq!(plain.multiline("app"), None, "as configured");
    }

    #[test]
    fn a_relist_forgets_pods_deleted_while_the_watch_was_down() {
        let pods = Pods::new(config());
        let p = |uid| pod(uid, ("StatefulSet", "db"), &[], &[]);
        pods.apply(Event::Init);
        pods.apply(Event::InitApply(p("a")));
        pods.apply(Event::InitApply(p("b")));
        pods.apply(Event::InitDone);
        assert!(pods.up.load(Ordering::Acquire));
        assert!(matches!(pods.get("a"), Lookup::Known(_)));
        pods.apply(Event::Delete(p("a")));
        // Deleted: still known for its last lines.
        assert!(matches!(pods.get("a"), Lookup::Known(_)));
        pods.apply(Event::Init);
        pods.apply(Event::InitApply(p("c")));
        pods.apply(Event::InitDone);
        assert!(matches!(pods.get("zzz"), Lookup::Unknown));
        let state = pods.state.lock().unwrap();
        assert!(
            state.pods["b"].1.is_some(),
            "b went while the watch was down"
        );
        assert!(state.pods["c"].1.is_none());
    }
}
