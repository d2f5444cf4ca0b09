//! Generation: the set written to disk, manifest by manifest.

use super::*;

pub(super) fn to_json(v: &serde_json::Value) -> Vec<u8> {
    // serde_json's maps are sorted (no preserve_order): stable bytes.
    v.to_string().into_bytes()
}

pub(super) struct Writer<'a> {
    pub(super) blobs: &'a Path,
    pub(super) all: BTreeMap<Digest, DataBlob>,
}

impl Writer<'_> {
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let d = BlobDir::scratch(self.blobs).put(bytes)?;
        Ok((d, bytes.len() as u64))
    }

    pub(super) fn blob(&mut self, bytes: &[u8], layer: bool) -> Result<(Digest, u64)> {
        let (digest, size) = self.put(bytes)?;
        self.all.entry(digest.clone()).or_insert(DataBlob {
            digest: digest.clone(),
            size,
            layer,
        });
        Ok((digest, size))
    }

    pub(super) fn layer(&mut self, l: &LayerOut) {
        self.all.entry(l.digest.clone()).or_insert(DataBlob {
            digest: l.digest.clone(),
            size: l.size,
            layer: true,
        });
    }

    /// A config + manifest; returns the manifest and the blobs it references.
    pub(super) fn manifest(
        &mut self,
        name: &str,
        kind: Kind,
        m: &ManifestPlan,
        layers: &[LayerOut],
    ) -> Result<(DataManifest, Vec<Digest>)> {
        let (mt, ct, lt) = match kind {
            Kind::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
            Kind::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
        };
        let mut parts = m.platform.split('/');
        let os = parts.next().unwrap_or("linux");
        let arch = parts.next().unwrap_or("amd64");
        let variant = parts.next();
        let mut config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": arch,
            "os": os,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": [format!("/usr/bin/{name}")],
                "Labels": {"org.opencontainers.image.title": name},
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": m.layers.iter().map(|&i| layers[i].diff_id.to_string()).collect::<Vec<_>>(),
            },
            "history": m.layers.iter().enumerate().map(|(i, _)| json!({
                "created": "1970-01-01T00:00:00Z",
                "created_by": format!("ferry bench: {name} layer {i}"),
            })).collect::<Vec<_>>(),
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let (cd, cs) = self.blob(&to_json(&config), false)?;
        let mut refs = vec![cd.clone()];
        let mut descs = Vec::new();
        for &i in &m.layers {
            let l = &layers[i];
            self.layer(l);
            if !refs.contains(&l.digest) {
                refs.push(l.digest.clone());
            }
            descs.push(json!({"mediaType": lt, "digest": l.digest.to_string(), "size": l.size}));
        }
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": ct, "digest": cd.to_string(), "size": cs},
            "layers": descs,
        });
        let (d, size) = self.put(&to_json(&doc))?;
        Ok((
            DataManifest {
                digest: d,
                media_type: mt.to_string(),
                size,
            },
            refs,
        ))
    }
}

// Long on purpose: the data set's images built in a fixed order from one
// seeded stream, so the bytes are reproducible; each block is one image.
pub(super) fn generate(
    dir: &Path,
    opts: &DatasetOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Dataset> {
    if opts.scale_gb.is_nan() || opts.scale_gb <= 0.0 {
        bail!("the scale must be positive (got {})", opts.scale_gb);
    }
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir)
        .with_context(|| format!("failed to create {}", blobs_dir.display()))?;
    let (layer_plans, image_plans) = plan(opts.scale_gb);
    // Enough real files that layers rarely repeat them (capped: gzip level 6
    // compresses /usr/lib to about 40 %).
    let want: u64 = layer_plans.iter().map(|l| l.real).sum::<u64>() * 3;
    let real = RealFiles::scan(&opts.real_root, want.min(3 << 30))?;
    progress(&format!(
        "data set: {} layers, {:.2} GB, from {} files of {} and seeded random bytes ({})",
        layer_plans.len(),
        opts.scale_gb,
        real.files.len(),
        opts.real_root.display(),
        dir.display()
    ));
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    // Largest first, so that the threads finish together.
    let mut order: Vec<usize> = (0..layer_plans.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(layer_plans[i].real + layer_plans[i].random));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LayerOut>>>> =
        Mutex::new((0..layer_plans.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (next, done, results, order, layer_plans, real) =
                (&next, &done, &results, &order, &layer_plans, &real);
            let blobs_dir = &blobs_dir;
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(&i) = order.get(k) else { break };
                let r = write_layer(&layer_plans[i], real, opts.seed, blobs_dir);
                let failed = r.is_err();
                if let Ok(mut g) = results.lock() {
                    g[i] = Some(r);
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 10 == 0 || n == layer_plans.len() {
                    progress(&format!("data set: {n}/{} layers", layer_plans.len()));
                }
                if failed {
                    // Stop handing out work.
                    next.store(usize::MAX / 2, Ordering::SeqCst);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?;
    // The first failure, rather than the layers it left undone.
    let mut results = results;
    if let Some(i) = results.iter().position(|r| matches!(r, Some(Err(_)))) {
        if let Some(Some(Err(e))) = results.get_mut(i).map(Option::take) {
            return Err(e.context(format!("failed to generate layer {}", layer_plans[i].name)));
        }
    }
    let mut layers = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(r) => layers.push(
                r.with_context(|| format!("failed to generate layer {}", layer_plans[i].name))?,
            ),
            None => bail!("layer {} was not generated", layer_plans[i].name),
        }
    }

    let mut w = Writer {
        blobs: &blobs_dir,
        all: BTreeMap::new(),
    };
    let mut images = Vec::new();
    for ip in &image_plans {
        match ip {
            ImagePlan::Single { repo, tag, kind, m } => {
                let name = repo.rsplit('/').next().unwrap_or(repo);
                let (top, blobs) = w.manifest(name, *kind, m, &layers)?;
                images.push(DataImage {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    top,
                    children: Vec::new(),
                    blobs,
                });
            }
            ImagePlan::Index {
                repo,
                tag,
                kind,
                children,
            } => {
                let name = repo.rsplit('/').next().unwrap_or(repo);
                let mut kids = Vec::new();
                let mut all_blobs: Vec<Digest> = Vec::new();
                let mut descs = Vec::new();
                for c in children {
                    let (m, blobs) = w.manifest(
                        &format!("{name}-{}", c.platform.replace('/', "-")),
                        *kind,
                        c,
                        &layers,
                    )?;
                    for b in blobs {
                        if !all_blobs.contains(&b) {
                            all_blobs.push(b);
                        }
                    }
                    let mut parts = c.platform.split('/');
                    let mut platform = json!({
                        "os": parts.next().unwrap_or("linux"),
                        "architecture": parts.next().unwrap_or("amd64"),
                    });
                    if let Some(v) = parts.next() {
                        platform["variant"] = json!(v);
                    }
                    descs.push(json!({
                        "mediaType": m.media_type,
                        "digest": m.digest.to_string(),
                        "size": m.size,
                        "platform": platform,
                    }));
                    kids.push(m);
                }
                let mt = match kind {
                    Kind::Oci => OCI_INDEX,
                    Kind::Docker => DOCKER_LIST,
                };
                let doc = json!({"schemaVersion": 2, "mediaType": mt, "manifests": descs});
                let (d, size) = w.put(&to_json(&doc))?;
                images.push(DataImage {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    top: DataManifest {
                        digest: d,
                        media_type: mt.to_string(),
                        size,
                    },
                    children: kids,
                    blobs: all_blobs,
                });
            }
            ImagePlan::Trivy { repo, tag, layer } => {
                let (ed, es) = w.blob(b"{}", false)?;
                let l = &layers[*layer];
                w.layer(l);
                let doc = json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": TRIVY_ARTIFACT_TYPE,
                    "config": {"mediaType": OCI_EMPTY, "digest": ed.to_string(), "size": es},
                    "layers": [{
                        "mediaType": TRIVY_DB_LAYER,
                        "digest": l.digest.to_string(),
                        "size": l.size,
                        "annotations": {TITLE_ANNOTATION: "db.tar.gz"},
                    }],
                    "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
                });
                let (d, size) = w.put(&to_json(&doc))?;
                images.push(DataImage {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    top: DataManifest {
                        digest: d,
                        media_type: OCI_MANIFEST.to_string(),
                        size,
                    },
                    children: Vec::new(),
                    blobs: vec![ed, l.digest.clone()],
                });
            }
        }
    }
    finish_set(dir, opts, images, w.all, progress)
}

/// Writes the layout's `index.json`, `oci-layout` and, last, `dataset.json`.
pub(super) fn finish_set(
    dir: &Path,
    opts: &DatasetOptions,
    images: Vec<DataImage>,
    all: BTreeMap<Digest, DataBlob>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Dataset> {
    let set = Dataset {
        version: GENERATOR_VERSION,
        options: opts.clone(),
        dir: dir.to_path_buf(),
        images,
        blobs: all.into_values().collect(),
    };
    // The OCI layout's index (skopeo can read the set as `oci:DIR:REF`).
    let manifests: Vec<serde_json::Value> = set
        .images
        .iter()
        .map(|i| {
            json!({
                "mediaType": i.top.media_type,
                "digest": i.top.digest.to_string(),
                "size": i.top.size,
                "annotations": {"org.opencontainers.image.ref.name": format!("{}:{}", i.repository, i.tag)},
            })
        })
        .collect();
    std::fs::write(
        dir.join("index.json"),
        to_json(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})),
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // Written last: its presence means the set is complete.
    std::fs::write(dir.join("dataset.json"), serde_json::to_vec_pretty(&set)?)?;
    progress(&format!(
        "data set: {} images, {} blobs, {} layer bytes",
        set.images.len(),
        set.blobs.len(),
        set.layer_bytes()
    ));
    Ok(set)
}
