//! Where the model runs: `model.device` parsed into a candle [`Device`].
//!
//! `cuda` / `cuda:N` need a build with the `cuda` cargo feature (candle's CUDA backend); in a
//! CPU-only build candle refuses them at load and the service runs rules-only, marked
//! degraded, saying why.

use candle_core::Device;

/// A configured device, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
}

/// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(text: &str) -> Option<DeviceSpec> {
    match text.trim() {
        "cpu" => Some(DeviceSpec::Cpu),
        "cuda" => Some(DeviceSpec::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceSpec::Cuda),
    }
}

impl DeviceSpec {
    /// Opens the device.
    pub fn open(self) -> Result<Device, candle_core::Error> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => Device::new_cuda(ordinal),
        }
    }

    /// `cpu` or `cuda:N`, as `GetModelInfo` reports it.
    pub fn name(self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".to_owned(),
            DeviceSpec::Cuda(ordinal) => format!("cuda:{ordinal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu"), Some(DeviceSpec::Cpu));
        assert_eq!(parse_device("cuda"), Some(DeviceSpec::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Some(DeviceSpec::Cuda(3)));
        assert_eq!(parse_device("gpu"), None);
        assert_eq!(parse_device("cuda:x"), None);
        assert_eq!(DeviceSpec::Cuda(1).name(), "cuda:1");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_refuses_cuda_with_a_reason() {
        let error = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(!error.is_empty());
    }
}
