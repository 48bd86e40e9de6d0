//! Where the model runs: a configured [`DeviceSpec`] opened as a candle [`Device`].
//!
//! `cuda` / `cuda:N` need a build with the `cuda` cargo feature (candle's CUDA backend); in a
//! CPU-only build candle refuses them at load and the service runs rules-only, marked
//! degraded, saying why.

use candle_core::Device;

use crate::config::DeviceSpec;

/// Opens the device.
pub fn open_device(spec: DeviceSpec) -> Result<Device, candle_core::Error> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => Device::new_cuda(ordinal),
    }
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_build_refuses_cuda_with_a_reason() {
        let error = open_device(DeviceSpec::Cuda(0)).unwrap_err().to_string();
        assert!(!error.is_empty());
    }
}
