//! Code generated from `proto/modbot/v1/*.proto` by `build.rs`.
//!
//! Architecture Invariant: only `grpc/` (and, later, `bridge/`) use these types; the domain
//! modules have their own, converted at the edge.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("modbot.v1");

/// The encoded file descriptor set of the whole API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("modbot_descriptor");
