//! Generated gRPC types and clients/servers for anyk (see `proto/anyk/v1/anyk.proto`), plus the
//! conversion of the core's layout to and from its wire form.

pub mod v1 {
    tonic::include_proto!("anyk.v1");
}

mod layout;

pub use layout::{LayoutError, layout_from_wire, layout_to_wire};

pub mod transport;
