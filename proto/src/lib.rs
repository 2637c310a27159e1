//! Generated gRPC types and clients/servers for anyk (see `proto/anyk/v1/anyk.proto`), plus the
//! conversion of the core's layout to and from its wire form, and the binaries' command lines
//! ([`launch`]).

// Generated code: its service dispatch functions are long by construction.
#[allow(clippy::too_many_lines)]
pub mod v1 {
    tonic::include_proto!("anyk.v1");
}

pub mod launch;
mod layout;

impl v1::Tensor {
    /// A flat f32 tensor as little-endian bytes.
    pub fn from_f32(values: &[f32]) -> Self {
        Self::from_f32_bytes(anyk_core::tensor_bytes::to_bytes(values))
    }

    /// A flat f32 tensor from bytes already in wire form (little-endian, 4 per value).
    pub fn from_f32_bytes(data: impl Into<tonic::codegen::Bytes>) -> Self {
        let data = data.into();
        Self {
            dtype: v1::DataType::F32 as i32,
            length: (data.len() / 4) as u64,
            data,
        }
    }
}

pub use layout::{LayoutError, layout_from_wire, layout_to_wire};

pub mod tls;
pub mod transport;
