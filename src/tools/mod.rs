//! Tools built on the layers: training and evaluating the heads, and the checks behind the
//! fuzz targets. Nothing is built on them.

pub mod datasets;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod train;
