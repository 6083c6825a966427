//! Copies of streamed model parts queued ahead of their use on a second stream (the copy-ahead
//! entries of `cuda_shim.cpp`), so under `--lowvram` the next block travels to the GPU while the
//! current one computes instead of before it.

use std::ffi::c_void;

use tch::Device;

use super::manager::Movable;

extern "C" {
    fn vdgx_copy_ahead_begin(device: i32) -> i32;
    fn vdgx_copy_ahead_end(event: *mut *mut c_void) -> i32;
    fn vdgx_copy_ahead_wait(event: *mut c_void) -> i32;
    fn vdgx_copy_ahead_free(event: *mut c_void);
}

/// The event recorded after a part's copies.
struct CopyEvent(*mut c_void);

impl Drop for CopyEvent {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `vdgx_copy_ahead_end` and is freed once, here.
        unsafe { vdgx_copy_ahead_free(self.0) };
    }
}

/// While alive, this thread's current stream is the copy stream; dropping it (also when a copy
/// panics) makes the caller's stream current again.
struct OnCopyStream(bool);

impl OnCopyStream {
    fn begin(index: usize) -> Option<Self> {
        let index = i32::try_from(index).ok()?;
        // SAFETY: an integer in, a status out.
        (unsafe { vdgx_copy_ahead_begin(index) } == 0).then_some(Self(true))
    }

    fn end(mut self) -> Option<CopyEvent> {
        self.0 = false;
        let mut event = std::ptr::null_mut();
        // SAFETY: `begin` succeeded on this thread and `end` has not run since; the shim writes
        // the event only on success.
        (unsafe { vdgx_copy_ahead_end(&mut event) } == 0).then_some(CopyEvent(event))
    }
}

impl Drop for OnCopyStream {
    fn drop(&mut self) {
        if self.0 {
            let mut event = std::ptr::null_mut();
            // SAFETY: as in `end`; an event it still made is freed right away.
            if unsafe { vdgx_copy_ahead_end(&mut event) } == 0 {
                drop(CopyEvent(event));
            }
        }
    }
}

/// A part on its way to the compute device.
pub struct Pending<T> {
    value: T,
    device: Device,
    copied: Option<CopyEvent>,
}

/// `value` copied to `device`. On a CUDA device the copies queue on the copy stream behind all
/// work this thread has queued so far, and `ready` orders the caller's stream after them;
/// elsewhere, or where the shim cannot do that, the copy runs now on the current stream.
pub fn copy_ahead<T: Movable>(value: &T, device: Device) -> Pending<T> {
    if let Device::Cuda(index) = device {
        if let Some(on_copy_stream) = OnCopyStream::begin(index) {
            let value = value.moved(device);
            let copied = on_copy_stream.end();
            if copied.is_none() {
                // The copies are queued with nothing to wait on: wait for the whole device.
                log::warn!("copy-ahead: no event after the copies; synchronizing the device");
                tch::Cuda::synchronize(index as i64);
            }
            return Pending {
                value,
                device,
                copied,
            };
        }
    }
    Pending {
        value: value.moved(device),
        device,
        copied: None,
    }
}

impl<T> Pending<T> {
    /// The part, with the current stream ordered after its copies.
    pub fn ready(self) -> T {
        if let (Some(event), Device::Cuda(index)) = (&self.copied, self.device) {
            // SAFETY: a live event from `vdgx_copy_ahead_end`.
            if unsafe { vdgx_copy_ahead_wait(event.0) } != 0 {
                log::warn!("copy-ahead: could not wait on the copies; synchronizing the device");
                tch::Cuda::synchronize(index as i64);
            }
        }
        self.value
    }
}
