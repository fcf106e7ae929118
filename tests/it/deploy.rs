//! The deployment files agree with Outrigger and with each other: the image's configuration
//! and the Kubernetes ConfigMap's are valid and listen where a container must; the drain's
//! grace period fits inside Kubernetes' termination grace; the local runtime image's
//! Dockerfile keeps the runtime settings of the real one. (Schema checks of the manifests,
//! hadolint and `docker-compose config` run in `.ci/run`.)

use std::net::SocketAddr;
use std::path::PathBuf;

use outrigger::config::{Settings, SourceKind};

fn file(path: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), path].iter().collect();
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Parses as Outrigger would with only `env` set.
fn settings(name: &str, text: &str, env: &[(&str, &str)]) -> Settings {
    outrigger::config::parse(name, text, |v| {
        env.iter()
            .find(|(k, _)| *k == v)
            .map(|(_, x)| x.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn forward_address(s: &Settings) -> SocketAddr {
    match &s.sources[0].kind {
        SourceKind::Forward(f) => f.address.expect("a TCP address"),
        SourceKind::File(_) => panic!("the first source is the forward listener"),
    }
}

/// The value of `key: <n>` in a YAML text (first occurrence).
fn yaml_number(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{key}:"))?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no numeric `{key}:`"))
}

#[test]
fn container_config_listens_on_every_interface() {
    let s = settings("container.toml", &file("config/container.toml"), &[]);
    assert_eq!(s.global.admin_address, "0.0.0.0:2020".parse().unwrap());
    assert!(s.global.admin_enabled);
    assert_eq!(forward_address(&s), "0.0.0.0:24224".parse().unwrap());
    // Overridable without editing the file.
    let s = settings(
        "container.toml",
        &file("config/container.toml"),
        &[
            ("FORWARD_ADDRESS", "[::]:24225"),
            ("ADMIN_ADDRESS", "0.0.0.0:9020"),
        ],
    );
    assert_eq!(forward_address(&s), "[::]:24225".parse().unwrap());
    assert_eq!(s.global.admin_address.port(), 9020);
}

#[test]
fn kubernetes_configmap_is_a_valid_config_within_the_grace_period() {
    let yaml = file("deploy/kubernetes/configmap.yaml");
    // The block scalar after `outrigger.toml: |`, indented four spaces.
    let toml: String = yaml
        .split_once("outrigger.toml: |\n")
        .expect("an outrigger.toml key")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim_start()))
        .map(|l| format!("{l}\n"))
        .collect();
    let s = settings(
        "configmap.yaml",
        &toml,
        &[
            ("NODE_NAME", "node-1"),
            ("LOKI_ENDPOINT", "http://loki:3100"),
        ],
    );
    assert_eq!(s.global.admin_address, "0.0.0.0:2020".parse().unwrap());
    assert_eq!(forward_address(&s), "0.0.0.0:24224".parse().unwrap());
    // NODE_NAME has no default: a manifest without the Downward API env fails to start.
    assert!(outrigger::config::parse("configmap.yaml", &toml, |_| None).is_err());

    let daemonset = file("deploy/kubernetes/daemonset.yaml");
    let termination = yaml_number(&daemonset, "terminationGracePeriodSeconds");
    assert!(
        s.global.grace_period_secs + 5 <= termination,
        "drain grace {} s vs terminationGracePeriodSeconds {termination}",
        s.global.grace_period_secs
    );
    assert!(daemonset.contains("containerPort: 2020") && daemonset.contains("path: /ready"));

    // The disk buffer is on the node, in a directory the non-root process owns: a hostPath
    // (made root-owned 0755 when missing, untouched by fsGroup) handed over by an init
    // container to the UID the container runs as.
    assert!(s.buffer.is_disk());
    let data_dir = s.global.data_dir.to_str().unwrap();
    assert!(
        daemonset.contains(&format!(
            "path: {data_dir}\n            type: DirectoryOrCreate"
        )),
        "a hostPath at data_dir"
    );
    let uid = yaml_number(&daemonset, "runAsUser");
    let init = daemonset
        .split_once("initContainers:")
        .expect("an init container")
        .1
        .split_once("containers:")
        .unwrap()
        .0;
    assert!(
        init.contains(&format!(
            r#"command: ["chown", "{uid}:{uid}", "{data_dir}"]"#
        )),
        "{init}"
    );
    assert!(init.contains(&format!("mountPath: {data_dir}")));

    // Every pod's log files, from the tree the DaemonSet mounts read-only, by a process that
    // can read the runtime's 0640 root:root files; its own pod known from the Downward API.
    let pods = s
        .sources
        .iter()
        .find_map(|src| match &src.kind {
            SourceKind::File(f) if f.tag_prefix == "kube" => Some(f),
            _ => None,
        })
        .expect("a kubernetes_logs source");
    let pods_dir = pods.include[0]
        .strip_suffix("/*/*/*.log")
        .expect("the kubelet's layout");
    assert!(
        daemonset.contains(&format!(
            "mountPath: {pods_dir}
              readOnly: true"
        )),
        "{pods_dir} mounted read-only"
    );
    assert!(daemonset.contains(&format!(
        "path: {pods_dir}
            type: Directory"
    )));
    assert!(daemonset.contains("supplementalGroups: [0]"));
    for (var, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        assert!(
            daemonset.contains(&format!(
                "- name: {var}
              valueFrom:
                fieldRef:
                  fieldPath: {field}"
            )),
            "{var} from the Downward API"
        );
    }
    // Read in one disk buffer record per read (the load checked it); tolerated everywhere.
    assert!(s.buffer.is_disk());
    assert!(daemonset.contains("tolerations:\n        - operator: Exists"));

    // Pod metadata from the API: this node's pods (the Downward API's node name), with a
    // token whose role reads pods and namespaces and nothing else.
    let watch = pods.pods.as_ref().expect("metadata = \"api\"");
    assert_eq!(watch.node_name, "node-1");
    assert!(daemonset.contains("automountServiceAccountToken: true"));
    let rbac = file("deploy/kubernetes/serviceaccount.yaml");
    assert!(rbac.contains("resources: [pods, namespaces]\n    verbs: [get, list, watch]"));
    assert!(rbac.contains("kind: ClusterRoleBinding"));
}

#[test]
fn local_runtime_image_mirrors_the_dockerfile() {
    // The instructions that decide how the container runs, with continuation lines joined.
    let runtime = |text: &str| -> Vec<String> {
        let joined = text.replace("\\\n", " ");
        let stage = joined.rsplit_once("\nFROM ").expect("a final stage").1;
        stage
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| {
                [
                    "USER ",
                    "EXPOSE ",
                    "STOPSIGNAL ",
                    "HEALTHCHECK ",
                    "ENTRYPOINT ",
                    "CMD ",
                    "ENV ",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect()
    };
    let real = runtime(&file("Dockerfile"));
    assert!(real.iter().any(|l| l == "USER 65532:65532"), "{real:?}");
    assert!(
        real.iter()
            .any(|l| l.ends_with(r#"CMD ["/outrigger", "health"]"#)),
        "{real:?}"
    );
    assert_eq!(runtime(&file("tests/docker/Dockerfile.local")), real);
}
