//! Where a data set comes from: a local file or directory, an http(s) URL, or S3-compatible
//! object storage. Everything is read into memory as named byte strings, in name order, so the
//! split (and its input digest) is the same whichever way the bytes arrived.

use std::path::Path;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

/// One input file: its name (for format detection and error messages) and its bytes.
pub struct InputFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to read {name}")]
    Read { name: String, source: std::io::Error },
    #[error("failed to fetch {name}: {why}")]
    Fetch { name: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// Endpoint of S3-compatible storage other than AWS (MinIO, Ceph, versitygw, ...): the AWS
/// SDKs' variable. Credentials and region come from the usual `AWS_*` variables.
const ENDPOINT_VARIABLE: &str = "AWS_ENDPOINT_URL";

/// Reads `input`: `s3://bucket/key`, `http(s)://...`, a file, or a directory. A directory, or
/// an S3 key ending in `/`, stands for every data file under it (by name).
pub fn read(input: &str) -> Result<Vec<InputFile>, SourceError> {
    let files = read_any(input)?;
    if files.is_empty() {
        return Err(SourceError::Invalid(format!(
            "{input}: no data files (.csv, .csv.gz or .safetensors)"
        )));
    }
    Ok(files)
}

/// [`read`] without the check that the files are data files: a single file is read whatever
/// its name.
pub fn read_any(input: &str) -> Result<Vec<InputFile>, SourceError> {
    if input.starts_with("s3://") || input.starts_with("http://") || input.starts_with("https://") {
        fetch_remote(input)
    } else {
        read_local(Path::new(input))
    }
}

/// Whether a file name is one `anyk data split` reads.
pub fn is_data_file(name: &str) -> bool {
    [".csv", ".csv.gz", ".safetensors"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn read_local(path: &Path) -> Result<Vec<InputFile>, SourceError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| SourceError::Read {
            name: path.display().to_string(),
            source,
        })
    };
    if !path.is_dir() {
        return Ok(vec![InputFile {
            name: path.display().to_string(),
            bytes: read(path)?,
        }]);
    }
    let listing = std::fs::read_dir(path).map_err(|source| SourceError::Read {
        name: path.display().to_string(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| SourceError::Read {
            name: path.display().to_string(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_data_file(&name) && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let file = path.join(&name);
            Ok(InputFile {
                name: file.display().to_string(),
                bytes: read(&file)?,
            })
        })
        .collect()
}

fn fetch_remote(input: &str) -> Result<Vec<InputFile>, SourceError> {
    // The storage client's TLS has no crypto provider of its own (see the workspace Cargo.toml):
    // the process's is ring, as everywhere in anyk. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SourceError::Read {
            name: input.into(),
            source,
        })?;
    runtime.block_on(async {
        let (store, key, path) = open_store(input)?;
        let fetch = |error| SourceError::Fetch {
            name: input.into(),
            why: short(&error),
        };
        let keys = if input.ends_with('/') {
            let listed: Vec<_> = store.list(Some(&path)).try_collect().await.map_err(fetch)?;
            let mut keys: Vec<ObjectPath> = listed.into_iter().map(|o| o.location).collect();
            keys.retain(|k| is_data_file(k.as_ref()));
            keys.sort();
            keys
        } else {
            vec![path]
        };
        // The key is the input's tail: what comes before it names the store.
        let root = &input[..input.len() - key.len()];
        let mut files = Vec::with_capacity(keys.len());
        for key in keys {
            let got = store.get(&key).await.map_err(fetch)?;
            let bytes = got.bytes().await.map_err(fetch)?;
            files.push(InputFile {
                name: format!("{root}{key}"),
                bytes: bytes.to_vec(),
            });
        }
        Ok(files)
    })
}

/// The gist of a storage error, in one line: the store's own errors repeat the response body
/// (XML) at every level of their chain, which buries what a user has to fix.
fn short(error: &object_store::Error) -> String {
    match error {
        object_store::Error::NotFound { .. } => "no such object".into(),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            "access denied: check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's policy".into()
        }
        // reqwest refuses to build a client without a single root certificate, even for http.
        other if other.to_string().contains("builder error") => {
            "could not set up the HTTP client: no root certificates (install ca-certificates, or see /etc/ssl/certs)".into()
        }
        other => {
            let text = other.to_string();
            let gist = text.split(": <?xml").next().unwrap_or(&text);
            gist.chars().take(300).collect()
        }
    }
}

/// The store for `input`, the key (or prefix) inside it as written, and as the store's path
/// (an S3 key as it is; a URL's path percent-decoded, as the HTTP store encodes it again).
fn open_store(input: &str) -> Result<(Box<dyn ObjectStore>, String, ObjectPath), SourceError> {
    let invalid = |why: String| SourceError::Invalid(format!("{input}: {why}"));
    if let Some(rest) = input.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| invalid("expected s3://BUCKET/KEY".into()))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Ok(endpoint) = std::env::var(ENDPOINT_VARIABLE) {
            // Self-hosted storage: path-style requests, plain HTTP when the endpoint says so.
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| invalid(e.to_string()))?;
        let path = ObjectPath::parse(key).map_err(|e| invalid(e.to_string()))?;
        return Ok((Box::new(store), key.to_string(), path));
    }
    if input.contains('?') {
        // The HTTP store takes paths, not query strings (a presigned URL's signature is one).
        return Err(invalid(
            "query strings are not supported; use s3:// with credentials".into(),
        ));
    }
    let scheme_end = input.find("://").map_or(0, |i| i + 3);
    let path_start = input[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .ok_or_else(|| invalid("a URL needs a path to a file".into()))?;
    let store = HttpBuilder::new()
        .with_url(&input[..path_start])
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let key = &input[path_start + 1..];
    let path = ObjectPath::from_url_path(key).map_err(|e| invalid(e.to_string()))?;
    Ok((Box::new(store), key.to_string(), path))
}
