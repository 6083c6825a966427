//! The few CUDA driver API entries we call ourselves (device facts libtorch does not expose, and
//! launching our runtime-compiled kernels), loaded from `libcuda.so.1` at run time so that the
//! binary also starts on machines without a GPU driver.

use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};

type CuResult = i32;
pub type CuDevice = i32;
pub type CuContext = *mut c_void;
pub type CuModule = *mut c_void;
pub type CuFunction = *mut c_void;

/// Function pointers into the driver, resolved once.
pub struct Driver {
    _lib: libloading::Library,
    device_get: unsafe extern "C" fn(*mut CuDevice, i32) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, i32, CuDevice) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut i32, i32, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    ctx_push: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_pop: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult,
    module_load_data: unsafe extern "C" fn(*mut CuModule, *const c_void) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    get_error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    /// Each device's primary context, retained once (every retain adds a reference), as an
    /// address so the cache can be shared between threads.
    primary_contexts: Mutex<HashMap<usize, usize>>,
}

/// The driver, or `None` where there is none (or `cuInit` fails).
pub fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER.get_or_init(|| Driver::load().ok()).as_ref()
}

/// Makes the device's primary context (the one libtorch uses) current for a scope.
struct ContextScope<'a>(&'a Driver);

impl Drop for ContextScope<'_> {
    fn drop(&mut self) {
        let mut popped = std::ptr::null_mut();
        // SAFETY: pops the context `Driver::enter` pushed on this thread.
        unsafe { (self.0.ctx_pop)(&mut popped) };
    }
}

impl Driver {
    fn load() -> Result<Self> {
        // SAFETY: the symbols are the CUDA driver API's, typed with the signatures it documents;
        // the library stays loaded as long as the pointers (it is kept in `_lib`).
        unsafe {
            let lib = libloading::Library::new("libcuda.so.1")?;
            let init: libloading::Symbol<unsafe extern "C" fn(c_uint) -> CuResult> =
                lib.get(b"cuInit")?;
            if init(0) != 0 {
                bail!("cuInit failed");
            }
            Ok(Self {
                device_get: *lib.get(b"cuDeviceGet")?,
                device_get_name: *lib.get(b"cuDeviceGetName")?,
                device_get_attribute: *lib.get(b"cuDeviceGetAttribute")?,
                primary_ctx_retain: *lib.get(b"cuDevicePrimaryCtxRetain")?,
                ctx_push: *lib.get(b"cuCtxPushCurrent_v2")?,
                ctx_pop: *lib.get(b"cuCtxPopCurrent_v2")?,
                mem_get_info: *lib.get(b"cuMemGetInfo_v2")?,
                module_load_data: *lib.get(b"cuModuleLoadData")?,
                module_get_function: *lib.get(b"cuModuleGetFunction")?,
                launch_kernel: *lib.get(b"cuLaunchKernel")?,
                get_error_string: *lib.get(b"cuGetErrorString")?,
                primary_contexts: Mutex::default(),
                _lib: lib,
            })
        }
    }

    fn check(&self, rc: CuResult, what: &str) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: the driver returns a static string or leaves the pointer null.
        let message = unsafe {
            (self.get_error_string)(rc, &mut text);
            if text.is_null() {
                format!("error {rc}")
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        bail!("CUDA driver: {what}: {message}")
    }

    fn device(&self, index: usize) -> Result<CuDevice> {
        let mut dev = 0;
        // SAFETY: writes one int.
        self.check(
            unsafe { (self.device_get)(&mut dev, index as i32) },
            "cuDeviceGet",
        )?;
        Ok(dev)
    }

    /// The device's primary context, retained on first use and kept for the process.
    fn primary_context(&self, index: usize) -> Result<CuContext> {
        let mut contexts = self
            .primary_contexts
            .lock()
            .map_err(|_| anyhow::anyhow!("CUDA context cache poisoned"))?;
        if let Some(ctx) = contexts.get(&index) {
            return Ok(*ctx as CuContext);
        }
        let dev = self.device(index)?;
        let mut ctx = std::ptr::null_mut();
        // SAFETY: writes one context handle.
        self.check(
            unsafe { (self.primary_ctx_retain)(&mut ctx, dev) },
            "cuDevicePrimaryCtxRetain",
        )?;
        contexts.insert(index, ctx as usize);
        Ok(ctx)
    }

    fn enter(&self, index: usize) -> Result<ContextScope<'_>> {
        let ctx = self.primary_context(index)?;
        // SAFETY: the context is retained for the process; the scope pops what this pushes.
        self.check(unsafe { (self.ctx_push)(ctx) }, "cuCtxPushCurrent")?;
        Ok(ContextScope(self))
    }

    pub fn device_name(&self, index: usize) -> Result<String> {
        let dev = self.device(index)?;
        let mut name = [0 as c_char; 256];
        // SAFETY: the driver writes at most 256 bytes, NUL-terminated.
        unsafe {
            self.check(
                (self.device_get_name)(name.as_mut_ptr(), 256, dev),
                "cuDeviceGetName",
            )?;
            Ok(CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned())
        }
    }

    /// One `CUdevice_attribute`.
    pub fn attribute(&self, index: usize, attribute: i32) -> Result<i32> {
        let dev = self.device(index)?;
        let mut value = 0;
        // SAFETY: writes one int.
        self.check(
            unsafe { (self.device_get_attribute)(&mut value, attribute, dev) },
            "cuDeviceGetAttribute",
        )?;
        Ok(value)
    }

    /// (free, total) bytes of device memory.
    pub fn memory(&self, index: usize) -> Result<(u64, u64)> {
        let _scope = self.enter(index)?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two sizes.
        self.check(
            unsafe { (self.mem_get_info)(&mut free, &mut total) },
            "cuMemGetInfo",
        )?;
        Ok((free as u64, total as u64))
    }

    /// Loads a PTX or cubin image into the device's primary context and finds `names` in it.
    pub fn load_functions(
        &self,
        index: usize,
        image: &[u8],
        names: &[&str],
    ) -> Result<Vec<CuFunction>> {
        let _scope = self.enter(index)?;
        let image = std::ffi::CString::new(image.strip_suffix(b"\0").unwrap_or(image))?;
        let mut module = std::ptr::null_mut();
        // SAFETY: the image is NUL-terminated PTX (or a cubin); the module lives as long as the
        // process (kernels are cached for its lifetime).
        self.check(
            unsafe { (self.module_load_data)(&mut module, image.as_ptr().cast()) },
            "cuModuleLoadData",
        )?;
        names
            .iter()
            .map(|name| {
                let cname = std::ffi::CString::new(*name)?;
                let mut function = std::ptr::null_mut();
                // SAFETY: looks a name up in the module just loaded.
                self.check(
                    unsafe { (self.module_get_function)(&mut function, module, cname.as_ptr()) },
                    name,
                )?;
                Ok(function)
            })
            .collect()
    }

    /// Launches `function` on the legacy default stream, the stream libtorch runs on unless a
    /// caller sets another (we never do), so it is ordered with the tensor ops around it.
    ///
    /// # Safety
    /// `params` must point at values whose types and order match the kernel's parameters, and
    /// every device pointer among them must be valid for what the kernel reads and writes.
    pub unsafe fn launch(
        &self,
        index: usize,
        function: CuFunction,
        grid: u32,
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let _scope = self.enter(index)?;
        self.check(
            (self.launch_kernel)(
                function,
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            "cuLaunchKernel",
        )
    }
}
