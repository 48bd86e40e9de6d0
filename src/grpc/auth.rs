//! Authentication: bearer tokens mapped to roles.
//!
//! (Skeleton: the token layer is filled in by the auth work of issue 6.)

/// Who made a request: the name of the token it carried. Handlers read it from the request's
/// extensions to record who asked for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (never the token itself).
    pub name: String,
}

/// The name of the credential that made `request`, or empty when the server runs without
/// tokens.
pub fn principal_name<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Principal>()
        .map(|p| p.name.clone())
        .unwrap_or_default()
}
