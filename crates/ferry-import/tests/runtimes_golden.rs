//! Golden files for every node runtime's configuration (issue 13): the
//! exact bytes `--emit-config` writes for one fixed mirror (TLS with a CA,
//! a pull credential, a mapped and an unmapped source registry). Any change
//! to what a consumer reads shows up as a reviewed snapshot diff.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use ferry_import::runtimes::{
    containerd_auth, containers_auth, docker_daemon, k3s_registries, openshift_mirror_sets,
    pull_secret, registries_conf, talos_patch, NodeMirror, PullCredential, SourceMirror,
};

fn mirror() -> NodeMirror {
    NodeMirror {
        host: "harbor.internal:8443".into(),
        ca_path: Some("/etc/ferry/mirror-ca.crt".into()),
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        auth: Some(PullCredential {
            username: "node-puller".into(),
            password: "pull-only".into(),
        }),
        ..NodeMirror::default()
    }
}

fn sources() -> Vec<SourceMirror> {
    vec![
        SourceMirror {
            source: "docker.io".into(),
            path: String::new(),
            digest_only: false,
        },
        SourceMirror {
            source: "registry.k8s.io".into(),
            path: "k8s".into(),
            digest_only: true,
        },
    ]
}

fn yaml(v: &impl serde::Serialize) -> String {
    ferry_bundle::yaml::to_string_yaml11(v).unwrap()
}

#[test]
fn every_runtime_file_is_golden() {
    let m = mirror();
    let s = sources();
    let cred = m.auth.clone().unwrap();
    insta::assert_snapshot!(
        "registries.conf",
        toml::to_string(&registries_conf(&m, &s)).unwrap()
    );
    insta::assert_snapshot!(
        "containers-auth.json",
        serde_json::to_string_pretty(&containers_auth(&m, &cred)).unwrap()
    );
    insta::assert_snapshot!("k3s-registries.yaml", yaml(&k3s_registries(&m, &s)));
    insta::assert_snapshot!("talos-registries-patch.yaml", yaml(&talos_patch(&m, &s)));
    let sets: Vec<String> = openshift_mirror_sets("ferry-mirror", &m, &s)
        .iter()
        .map(yaml)
        .collect();
    insta::assert_snapshot!("openshift-image-mirror-sets.yaml", sets.join("---\n"));
    insta::assert_snapshot!(
        "docker-daemon.json",
        serde_json::to_string_pretty(&docker_daemon(&m, &s).unwrap()).unwrap()
    );
    insta::assert_snapshot!(
        "containerd-registry-auth.toml",
        toml::to_string(&containerd_auth(&m, &cred)).unwrap()
    );
    insta::assert_snapshot!(
        "pull-secret.yaml",
        yaml(&pull_secret("ferry-mirror-pull", &m, &cred))
    );
}
