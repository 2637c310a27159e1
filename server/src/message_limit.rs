//! A per-message size limit that follows the model (docs/design.md, invariant 11): once the job
//! has parameters, a Training request may carry at most the model's bytes plus a small header.
//! tonic's decoding limit is fixed when the service is built, before the model size is known,
//! so this reads each gRPC message's length prefix as the body streams in and refuses a message
//! that is too large with RESOURCE_EXHAUSTED before its payload is buffered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Bytes, Service};
use tonic::server::NamedService;

use crate::admission::{Admission, Hint, PART_METADATA};

/// Room for everything in a request besides the model's values: ids, step, epoch, loss, the
/// tensor's dtype and shape, and protobuf tags. The block list is counted separately.
const HEADER_BYTES: usize = 1024;
/// Worst case of one block id in a packed varint list.
const BYTES_PER_BLOCK: usize = 5;

/// The largest message a Training call may carry now, shared by the service and every request.
#[derive(Clone, Debug)]
pub struct MessageLimit(Arc<AtomicUsize>);

impl MessageLimit {
    /// Before initialization: `ceiling`, the transport's static limit (the initial parameters
    /// define the model, so nothing smaller is known yet).
    pub fn new(ceiling: usize) -> Self {
        Self(Arc::new(AtomicUsize::new(ceiling)))
    }

    /// Once the job has `params` f32 values over `blocks` blocks; never above the ceiling.
    pub fn fit_model(&self, params: usize, blocks: u32) -> usize {
        let fitted = params
            .saturating_mul(4)
            .saturating_add(HEADER_BYTES)
            .saturating_add(BYTES_PER_BLOCK.saturating_mul(blocks as usize));
        let previous = self.0.fetch_min(fitted, Ordering::Relaxed);
        previous.min(fitted)
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Reads gRPC length-prefixed framing (1 flag byte, 4 length bytes big-endian, payload) across
/// arbitrary chunk boundaries, and reports the first message longer than the limit.
#[derive(Debug, Default)]
pub struct FrameMeter {
    /// Prefix bytes of the current message seen so far (0..5).
    prefix: Vec<u8>,
    /// Payload bytes of the current message still to come.
    payload_left: usize,
}

impl FrameMeter {
    /// Feeds the next chunk; `Err(length)` names a message longer than `limit`.
    pub fn feed(&mut self, mut chunk: &[u8], limit: usize) -> Result<(), usize> {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let taken = self.payload_left.min(chunk.len());
                self.payload_left -= taken;
                chunk = &chunk[taken..];
                continue;
            }
            let wanted = 5 - self.prefix.len();
            let taken = wanted.min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..taken]);
            chunk = &chunk[taken..];
            if self.prefix.len() == 5 {
                let length =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                let length = length as usize;
                if length > limit {
                    return Err(length);
                }
                self.prefix.clear();
                self.payload_left = length;
            }
        }
        Ok(())
    }
}

/// Requests that carry a model's bytes; they are read as [`Admission`] lets them.
const MODEL_SIZED_PATHS: [&str; 2] = ["/anyk.v1.Training/PushGradient", "/anyk.v1.Training/Initialize"];

/// Wraps a service so every request body is metered against `limit`, and at most
/// model-sized requests are read in the order [`Admission`] picks.
#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    limit: MessageLimit,
    admission: Arc<Admission>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, limit: MessageLimit, admission: Arc<Admission>) -> Self {
        Self {
            inner,
            limit,
            admission,
        }
    }
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Limited<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.limit.clone();
        let admission = MODEL_SIZED_PATHS
            .contains(&request.uri().path())
            .then(|| (self.admission.clone(), part_hint(&request)));
        let request = request.map(|body| {
            Body::new(MeteredBody {
                inner: body,
                meter: FrameMeter::default(),
                limit,
            })
        });
        // The service that was made ready serves this call; a fresh clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let _slot = match admission {
                Some((admission, hint)) => Some(admission.enter(hint).await),
                None => None,
            };
            inner.call(request).await
        })
    }
}

/// The part a push says it carries (its metadata), if it says so.
fn part_hint<B>(request: &Request<B>) -> Option<Hint> {
    let value = request.headers().get(PART_METADATA)?;
    Hint::parse(value.to_str().ok()?)
}

struct MeteredBody {
    inner: Body,
    meter: FrameMeter,
    limit: MessageLimit,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let limit = this.limit.get();
            if let Err(length) = this.meter.feed(data, limit) {
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "message of {length} bytes is larger than this job allows ({limit} bytes: \
                     the model's parameters plus a header)"
                )))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len));
        bytes
    }

    #[test]
    fn messages_at_the_limit_pass_in_any_chunking() {
        let stream: Vec<u8> = [message(10), message(0), message(3)].concat();
        for chunk in 1..stream.len() {
            let mut meter = FrameMeter::default();
            for part in stream.chunks(chunk) {
                assert_eq!(meter.feed(part, 10), Ok(()), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn the_first_message_over_the_limit_is_named_from_its_prefix() {
        let stream: Vec<u8> = [message(4), message(11)].concat();
        // Only the prefix of the long message is needed to refuse it.
        let upto_prefix = &stream[..9 + 5];
        for chunk in 1..upto_prefix.len() {
            let mut meter = FrameMeter::default();
            let results: Vec<_> = upto_prefix.chunks(chunk).map(|p| meter.feed(p, 10)).collect();
            assert_eq!(results.last(), Some(&Err(11)), "chunks of {chunk}");
        }
    }

    #[test]
    fn fitting_the_model_only_ever_lowers_the_limit() {
        let limit = MessageLimit::new(1 << 20);
        assert_eq!(limit.fit_model(100, 6), 400 + HEADER_BYTES + 30);
        assert_eq!(limit.get(), 400 + HEADER_BYTES + 30);
        assert_eq!(limit.fit_model(1 << 30, 6), 400 + HEADER_BYTES + 30);
        let small = MessageLimit::new(64);
        assert_eq!(small.fit_model(100, 6), 64);
    }
}
