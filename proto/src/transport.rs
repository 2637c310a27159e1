//! Transport settings every anyk endpoint shares. Gradients and parameters are whole-model
//! tensors: the 4 MiB tonic default would refuse any real model, and the default 64 KiB HTTP/2
//! windows cap loopback throughput far below what `bytes` fields can do.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::Credentials;

/// Largest message accepted or sent (a model of 64M f32 parameters). Deliberately raised from
/// tonic's 4 MiB; the server takes a flag to lower it.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Request metadata on a gradient push: `STEP/LO/HI`, the step and the blocks lo..hi of the
/// part it carries. A hint for the order in which the server reads waiting pushes
/// (server/src/admission); the message's own fields are what count.
pub const PART_METADATA: &str = "anyk-part";

/// The [`PART_METADATA`] value of a part of `step` with blocks `lo..hi`.
pub fn part_metadata(step: u64, lo: u32, hi: u32) -> String {
    format!("{step}/{lo}/{hi}")
}
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// A lazily connecting plaintext channel to an anyk server with the shared settings.
pub fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    secure_channel(url, None)
}

/// A lazily connecting channel to an anyk server; with `tls`, mutual TLS: it presents those
/// credentials and trusts only their job's authority, for a server certificate that names the
/// URL's host.
pub fn secure_channel(url: &str, tls: Option<&Credentials>) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(url.to_string())?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20));
    if let Some(credentials) = tls {
        let host = endpoint
            .uri()
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        endpoint = endpoint.tls_config(credentials.client_config(&host))?;
    }
    Ok(endpoint.connect_lazy())
}
