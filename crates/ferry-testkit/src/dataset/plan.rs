//! The plan: which layers, which images.

/// One layer to generate.
#[derive(Debug, Clone)]
pub(super) struct LayerPlan {
    pub(super) name: String,
    /// Target compressed bytes from real files.
    pub(super) real: u64,
    /// Pseudo-random (incompressible) bytes.
    pub(super) random: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Oci,
    Docker,
}

/// One manifest to write: a platform and its layers (indexes into the layer list).
#[derive(Debug, Clone)]
pub(super) struct ManifestPlan {
    pub(super) platform: &'static str,
    pub(super) layers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(super) enum ImagePlan {
    Single {
        repo: String,
        tag: String,
        kind: Kind,
        m: ManifestPlan,
    },
    Index {
        repo: String,
        tag: String,
        kind: Kind,
        children: Vec<ManifestPlan>,
    },
    Trivy {
        repo: String,
        tag: String,
        layer: usize,
    },
}

pub(super) struct Planner {
    pub(super) total: f64,
    pub(super) layers: Vec<LayerPlan>,
}

impl Planner {
    /// A layer of `fraction` of the total, `random` of it incompressible.
    pub(super) fn layer(&mut self, name: &str, fraction: f64, random: f64) -> usize {
        let size = (self.total * fraction).max(4096.0);
        self.layers.push(LayerPlan {
            name: name.to_string(),
            real: (size * (1.0 - random)) as u64,
            random: (size * random) as u64,
        });
        self.layers.len() - 1
    }
}

/// The images of a Kubernetes platform: (repository, base, runtime, app
/// layers as (fraction weight, random share)).
/// An application image: (name, base, runtime, app layers as (weight, random share)).
pub(super) type App = (&'static str, usize, Option<usize>, &'static [(f64, f64)]);

pub(super) const APPS: &[App] = &[
    (
        "ingress-nginx-controller",
        1,
        None,
        &[(3.0, 0.2), (1.0, 0.1)],
    ),
    ("cert-manager-controller", 2, None, &[(1.5, 0.3)]),
    ("cert-manager-webhook", 2, None, &[(1.0, 0.3)]),
    ("cert-manager-cainjector", 2, None, &[(1.0, 0.3)]),
    ("prometheus", 2, None, &[(4.0, 0.3), (1.0, 0.5)]),
    ("alertmanager", 2, None, &[(2.0, 0.3)]),
    ("node-exporter", 2, None, &[(1.0, 0.3)]),
    ("kube-state-metrics", 2, None, &[(1.0, 0.3)]),
    ("grafana", 0, Some(2), &[(5.0, 0.2), (3.0, 0.6), (0.5, 0.1)]),
    ("opensearch", 0, Some(1), &[(9.0, 0.3), (3.0, 0.2)]),
    ("opensearch-dashboards", 0, Some(2), &[(6.0, 0.3)]),
    ("fluent-bit", 0, None, &[(1.5, 0.2)]),
    ("falco", 0, None, &[(4.0, 0.2), (1.0, 0.5)]),
    ("trivy-operator", 2, None, &[(2.0, 0.3)]),
    ("velero", 2, None, &[(2.5, 0.3)]),
    ("thanos", 2, None, &[(3.0, 0.3)]),
    ("harbor-core", 0, Some(0), &[(2.0, 0.2)]),
    ("dex", 1, None, &[(1.5, 0.3)]),
    ("gatekeeper", 2, None, &[(2.0, 0.3)]),
    ("metrics-server", 2, None, &[(1.0, 0.3)]),
];

pub(super) fn plan(scale_gb: f64) -> (Vec<LayerPlan>, Vec<ImagePlan>) {
    let mut p = Planner {
        total: scale_gb * 1e9,
        layers: Vec::new(),
    };
    let bases = [
        p.layer("base-debian", 0.04, 0.1),
        p.layer("base-alpine", 0.01, 0.1),
        p.layer("base-distroless", 0.015, 0.1),
    ];
    let runtimes = [
        p.layer("runtime-python", 0.04, 0.1),
        p.layer("runtime-jre", 0.06, 0.2),
        p.layer("runtime-node", 0.03, 0.1),
    ];
    let trivy = p.layer("trivy-db", 0.03, 0.9);
    let many: Vec<usize> = (0..40)
        .map(|i| p.layer(&format!("many-{i:02}"), 0.01 / 40.0, 0.3))
        .collect();
    // What remains goes to the application layers, by weight.
    let fixed = 0.04 + 0.01 + 0.015 + 0.04 + 0.06 + 0.03 + 0.03 + 0.01;
    let multi_weights = [(3.0, 0.3), (3.0, 0.3), (2.0, 0.3)];
    let docker_weights = [(3.0, 0.2), (1.0, 0.2)];
    let list_weights = [(1.5, 0.3), (1.5, 0.3)];
    let weight: f64 = APPS
        .iter()
        .flat_map(|(_, _, _, l)| l.iter().map(|(w, _)| w))
        .chain(multi_weights.iter().map(|(w, _)| w))
        .chain(docker_weights.iter().map(|(w, _)| w))
        .chain(list_weights.iter().map(|(w, _)| w))
        .sum();
    let per = (1.0 - fixed) / weight;
    let mut images = Vec::new();
    for (name, base, runtime, apps) in APPS {
        let mut layers = vec![bases[*base]];
        layers.extend(runtime.map(|r| runtimes[r]));
        for (i, (w, r)) in apps.iter().enumerate() {
            layers.push(p.layer(&format!("{name}-{i}"), w * per, *r));
        }
        images.push(ImagePlan::Single {
            repo: format!("bench/{name}"),
            tag: "1.0".into(),
            kind: Kind::Oci,
            m: ManifestPlan {
                platform: "linux/amd64",
                layers,
            },
        });
    }
    let platforms = ["linux/amd64", "linux/arm64/v8", "linux/s390x"];
    let children = platforms
        .iter()
        .zip(multi_weights)
        .map(|(platform, (w, r))| {
            let arch = platform.replace('/', "-");
            ManifestPlan {
                platform,
                layers: vec![
                    bases[0],
                    p.layer(&format!("calico-node-{arch}"), w * per, r),
                ],
            }
        })
        .collect();
    images.push(ImagePlan::Index {
        repo: "bench/calico-node".into(),
        tag: "1.0".into(),
        kind: Kind::Oci,
        children,
    });
    let mut layers = vec![bases[0]];
    for (i, (w, r)) in docker_weights.iter().enumerate() {
        layers.push(p.layer(&format!("postgres-{i}"), w * per, *r));
    }
    images.push(ImagePlan::Single {
        repo: "bench/postgres".into(),
        tag: "1.0".into(),
        kind: Kind::Docker,
        m: ManifestPlan {
            platform: "linux/amd64",
            layers,
        },
    });
    let children = ["linux/amd64", "linux/arm64/v8"]
        .iter()
        .zip(list_weights)
        .map(|(platform, (w, r))| {
            let arch = platform.replace('/', "-");
            ManifestPlan {
                platform,
                layers: vec![bases[0], p.layer(&format!("redis-{arch}"), w * per, r)],
            }
        })
        .collect();
    images.push(ImagePlan::Index {
        repo: "bench/redis".into(),
        tag: "1.0".into(),
        kind: Kind::Docker,
        children,
    });
    images.push(ImagePlan::Trivy {
        repo: "bench/trivy-db".into(),
        tag: "2".into(),
        layer: trivy,
    });
    images.push(ImagePlan::Single {
        repo: "bench/many-layers".into(),
        tag: "1.0".into(),
        kind: Kind::Oci,
        m: ManifestPlan {
            platform: "linux/amd64",
            layers: std::iter::once(bases[1]).chain(many).collect(),
        },
    });
    (p.layers, images)
}
