//! The `oci_spec` types at the seams (issue 14, item 5): every serialized
//! type that carries a [`MediaType`] or a platform reads and writes the same
//! bytes as when it carried strings, with a Docker schema2 type and an
//! unknown type (both `MediaType::Other`) among them; comparisons go by the
//! exact string; hostile input keeps its errors.

use std::collections::BTreeMap;

use ferry_bundle::artifact::{self, FileLayer};
use ferry_bundle::lock::Lock;
use ferry_bundle::manifest::{
    self, arch, is_any_manifest, is_docker, is_index, is_manifest, os, Arch, Descriptor,
    ManifestError, MediaType, Os, Platform, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use ferry_bundle::meta::{BundleMeta, Kind};
use ferry_bundle::Digest;

/// `sha256:` and 64 times `c`.
fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

const UNKNOWN: &str = "application/vnd.example.unknown+x";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[test]
fn bundle_json_round_trips_byte_identical_with_docker_and_unknown_types() {
    let (a, b, c, d, i) = (
        digest('a'),
        digest('b'),
        digest('c'),
        digest('d'),
        digest('1'),
    );
    let text = format!(
        r#"{{
  "formatVersion": 1,
  "tool": "ferry 0.1.0",
  "name": "seams",
  "index": {{
    "digest": "{i}",
    "size": 10
  }},
  "items": [
    {{
      "kind": "image",
      "ref": "docker.io/library/a:1",
      "digest": "{a}",
      "mediaType": "{DOCKER_LIST}",
      "size": 7,
      "platforms": [
        "linux/amd64",
        "linux/armbe"
      ]
    }},
    {{
      "kind": "image",
      "ref": "docker.io/library/b:1",
      "digest": "{b}",
      "mediaType": "{OCI_MANIFEST}",
      "size": 8
    }},
    {{
      "kind": "file",
      "ref": "https://dl.example/x",
      "digest": "{c}",
      "mediaType": "{UNKNOWN}",
      "size": 9,
      "path": "files/x"
    }}
  ],
  "blobs": [
    {{
      "digest": "{a}",
      "size": 7,
      "role": "index",
      "mediaType": "{DOCKER_LIST}"
    }},
    {{
      "digest": "{d}",
      "size": 2,
      "role": "config",
      "mediaType": "{DOCKER_CONFIG}"
    }},
    {{
      "digest": "{c}",
      "size": 9,
      "role": "layer",
      "mediaType": "{UNKNOWN}"
    }},
    {{
      "digest": "{b}",
      "size": 3,
      "role": "layer"
    }}
  ],
  "absent": [
    {{
      "digest": "{d}",
      "parent": "{a}",
      "platform": "linux/armbe"
    }}
  ]
}}
"#
    );
    let meta: BundleMeta = serde_json::from_str(&text).unwrap();
    meta.check().unwrap();
    assert_eq!(String::from_utf8(meta.to_json()).unwrap(), text);
    // Typed: the OCI type is its named variant, Docker's and the unknown
    // one are `Other` with the exact string.
    assert_eq!(
        meta.items[0].media_type,
        MediaType::Other(DOCKER_LIST.into())
    );
    assert!(is_index(&meta.items[0].media_type) && is_docker(&meta.items[0].media_type));
    assert_eq!(meta.items[1].media_type, MediaType::ImageManifest);
    assert_eq!(meta.items[2].media_type, MediaType::Other(UNKNOWN.into()));
    assert_eq!(meta.items[2].kind, Kind::File);
    assert_eq!(
        meta.blobs[1].media_type,
        Some(MediaType::Other(DOCKER_CONFIG.into()))
    );
    assert_eq!(meta.blobs[3].media_type, None);
    // index.json names the same strings.
    let index = String::from_utf8(ferry_bundle::meta::index_json(&meta.items)).unwrap();
    for mt in [DOCKER_LIST, OCI_MANIFEST, UNKNOWN] {
        assert!(index.contains(&format!(r#""mediaType": "{mt}""#)), "{mt}");
    }
}

#[test]
fn the_lock_round_trips_byte_identical_with_docker_and_unknown_types() {
    let (a, b, c) = (digest('a'), digest('b'), digest('c'));
    let text = format!(
        r#"{{
  "lockVersion": 1,
  "images": [
    {{
      "ref": "docker.io/library/a:1",
      "digest": "{a}",
      "mediaType": "{DOCKER_LIST}",
      "size": 7,
      "filter": [
        "linux/amd64"
      ],
      "platforms": [
        {{
          "platform": "linux/amd64",
          "digest": "{b}"
        }}
      ]
    }},
    {{
      "ref": "docker.io/library/b:1",
      "digest": "{b}",
      "mediaType": "{DOCKER_MANIFEST}",
      "size": 8
    }}
  ],
  "artifacts": [
    {{
      "ref": "https://dl.example/x",
      "digest": "{c}",
      "mediaType": "{UNKNOWN}",
      "size": 9,
      "kind": "file",
      "content": "{a}",
      "url": "https://dl.example/x"
    }}
  ]
}}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.lock");
    std::fs::write(&path, &text).unwrap();
    let lock = Lock::load(&path).unwrap();
    assert_eq!(String::from_utf8(lock.to_json()).unwrap(), text);
    assert_eq!(
        lock.images[1].media_type,
        MediaType::Other(DOCKER_MANIFEST.into())
    );
    assert!(is_manifest(&lock.images[1].media_type));
    assert_eq!(
        lock.artifacts[0].media_type,
        MediaType::Other(UNKNOWN.into())
    );
    // Rebuilt from its entries, the same bytes again.
    let again = Lock::new(lock.entries().cloned().collect());
    assert_eq!(again.to_json(), lock.to_json());
}

#[test]
fn descriptors_and_platforms_round_trip_byte_identical() {
    let a = digest('a');
    for text in [
        // Docker child of a manifest list, with os.version and os.features.
        format!(
            r#"{{"mediaType":"{DOCKER_MANIFEST}","digest":"{a}","size":7,"platform":{{"os":"windows","architecture":"amd64","os.version":"10.0.17763.1234","os.features":["win32k"]}}}}"#
        ),
        // An architecture oci_spec 0.10 reads as another (`armbe` →
        // `arm64be`), a variant, an unknown OS, an unknown artifact type,
        // annotations and urls.
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{a}","size":7,"platform":{{"os":"plan10","architecture":"armbe","variant":"v7"}},"artifactType":"{UNKNOWN}","annotations":{{"a":"1","b":"2"}},"urls":["https://x/y"]}}"#
        ),
        // No mediaType at all: read as the empty string, as before.
        format!(r#"{{"mediaType":"","digest":"{a}","size":7}}"#),
    ] {
        let d: Descriptor = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), text);
    }
    let no_type: Descriptor =
        serde_json::from_str(&format!(r#"{{"digest":"{a}","size":7}}"#)).unwrap();
    assert_eq!(no_type.media_type.as_ref(), "");
    assert!(!is_any_manifest(&no_type.media_type));

    let p: Platform = serde_json::from_str(r#"{"os":"linux","architecture":"armbe"}"#).unwrap();
    assert_eq!(p.os, Os::Linux);
    assert_eq!(p.architecture, Arch::Other("armbe".into()));
    assert_eq!(p.to_short(), "linux/armbe");
    assert!(p.matches("linux/armbe") && !p.matches("linux/arm64be"));
    // The reason `arch` exists; when oci_spec reads `armbe` right, this
    // fails and the guard can go.
    assert_eq!(Arch::from("armbe").to_string(), "arm64be");
    for name in [
        "386", "amd64", "arm64", "s390x", "loong64", "armbe", "amd/4", "",
    ] {
        assert_eq!(arch(name).to_string(), name);
    }
    for name in ["linux", "windows", "dragonfly", "ios", "plan10", ""] {
        assert_eq!(os(name).to_string(), name);
    }
    assert_eq!(arch("arm64"), Arch::ARM64);
    assert_eq!(os("linux"), Os::Linux);
}

#[test]
fn parsed_media_types_are_typed_and_compared_by_the_exact_string() {
    let a = digest('a');
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{a}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
    );
    let p = manifest::parse(list.as_bytes(), Some(DOCKER_LIST)).unwrap();
    assert_eq!(p.media_type, MediaType::Other(DOCKER_LIST.into()));
    assert!(p.is_index() && is_docker(&p.media_type));
    assert_eq!(
        p.manifests[0].media_type,
        MediaType::Other(DOCKER_MANIFEST.into())
    );
    assert!(is_manifest(&p.manifests[0].media_type));
    let oci = r#"{"schemaVersion":2,"manifests":[]}"#;
    let p = manifest::parse(oci.as_bytes(), None).unwrap();
    assert_eq!(p.media_type, MediaType::ImageIndex);
    assert!(is_index(&p.media_type) && !is_docker(&p.media_type));
    assert_eq!(p.media_type.as_ref(), OCI_INDEX);
    // A hand-built `Other` holding an OCI string is still that type by
    // string, which is how ferry compares.
    assert!(is_index(&MediaType::Other(OCI_INDEX.into())));

    // Hostile input keeps its errors.
    let doc = format!(r#"{{"schemaVersion":2,"mediaType":"{UNKNOWN}","layers":[]}}"#);
    assert!(matches!(
        manifest::parse(doc.as_bytes(), None),
        Err(ManifestError::UnsupportedMediaType(m)) if m == UNKNOWN
    ));
    let doc = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","layers":[]}}"#);
    assert!(matches!(
        manifest::parse(doc.as_bytes(), Some(DOCKER_LIST)),
        Err(ManifestError::MediaTypeMismatch { inner, outer })
            if inner == DOCKER_MANIFEST && outer == DOCKER_LIST
    ));
    for bad in [
        // Not ferry's sha256 digest: oci_spec's Descriptor would take it.
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha512:{}","size":7}}]}}"#,
            "a".repeat(128)
        ),
        // A platform without an os.
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{a}","size":7,"platform":{{"architecture":"amd64"}}}}]}}"#
        ),
        // os.features that is not a list of strings (now read, as the
        // image spec's platform has it; Go's decoders refuse it too).
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{a}","size":7,"platform":{{"os":"linux","architecture":"amd64","os.features":5}}}}]}}"#
        ),
        // A media type that is not a string.
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":7,"digest":"{a}","size":7}}]}}"#),
    ] {
        assert!(
            matches!(
                manifest::parse(bad.as_bytes(), None),
                Err(ManifestError::Json(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn file_artifact_manifests_keep_their_bytes() {
    // Sorted keys, no whitespace: the digest of a file item depends on it.
    let zip = FileLayer {
        digest: Digest::of(b"zip"),
        size: 3,
        media_type: MediaType::from("application/zip"),
        title: "a.zip".into(),
    };
    let bytes = artifact::file_manifest(Kind::File, std::slice::from_ref(&zip), &BTreeMap::new());
    let expected = format!(
        r#"{{"artifactType":"application/vnd.dev.ferry.file.v1","config":{{"digest":"{}","mediaType":"application/vnd.oci.empty.v1+json","size":2}},"layers":[{{"annotations":{{"org.opencontainers.image.title":"a.zip"}},"digest":"{}","mediaType":"application/zip","size":3}}],"mediaType":"{OCI_MANIFEST}","schemaVersion":2}}"#,
        Digest::of(b"{}"),
        zip.digest
    );
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
    let parsed = manifest::parse(&bytes, None).unwrap();
    assert_eq!(parsed.layers[0].media_type, zip.media_type);
    assert_eq!(
        parsed.config.as_ref().map(|c| &c.media_type),
        Some(&MediaType::EmptyJSON)
    );
    assert_eq!(
        parsed.artifact_type_str(),
        Some(artifact::artifact_type(Kind::File))
    );
}

#[test]
fn the_typed_fields_cost_no_more_memory_than_the_strings_they_replaced() {
    // Known types are variants (no allocation); the rest one `String`.
    assert!(std::mem::size_of::<MediaType>() <= std::mem::size_of::<String>());
    assert!(std::mem::size_of::<Os>() <= std::mem::size_of::<String>());
    assert!(std::mem::size_of::<Arch>() <= std::mem::size_of::<String>());
    // A descriptor (a reader keeps one per layer of every manifest) is
    // smaller than the all-strings one it replaced: its platform, which
    // layers never have, is boxed.
    #[allow(dead_code)]
    struct StringPlatform(String, String, Option<String>, Option<String>);
    #[allow(dead_code)]
    struct StringDescriptor {
        media_type: String,
        digest: Digest,
        size: u64,
        platform: Option<StringPlatform>,
        artifact_type: Option<String>,
        annotations: BTreeMap<String, String>,
        urls: Vec<String>,
    }
    assert!(std::mem::size_of::<Descriptor>() < std::mem::size_of::<StringDescriptor>());
}
