//! The devices the device-generic tests run on: the CPU always, the first CUDA GPU where present.

use tch::Device;

pub fn devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    devices
}
