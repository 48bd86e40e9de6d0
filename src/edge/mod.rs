//! The edges: they convert what arrives on the wire and call the services.

pub mod grpc;
pub mod http;
