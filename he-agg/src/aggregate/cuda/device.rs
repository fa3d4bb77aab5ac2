//! One CUDA device, loaded at run time: the driver and NVRTC are opened with dlopen, the kernel
//! is compiled for the device's compute capability, and batches of ciphertexts stream through
//! pinned host buffers. Each staging slot has its own copy stream, so copying chunk k+1 (and
//! filling the pinned buffer of chunk k+2 on the host) overlaps the kernel of chunk k; kernels
//! run in order on one compute stream, which is what makes their updates of the accumulator
//! race-free. cudarc's automatic event tracking is off: the events below say exactly what
//! waits for what.

use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    LaunchConfig, PinnedHostSlice, PushKernelArg, result, sys,
};
use cudarc::nvrtc::{self, CompileOptions};
use rayon::prelude::*;

use super::error::CudaError;
use super::fallback::{DeviceSum, Input};
use super::kernels::{FOLD_BLOCK, FOLD_KERNEL, FOLD_SOURCE};
use super::reference::WeightConst;

/// Staging slots: one being filled by the host, one copying, one being read by a kernel.
const SLOTS: usize = 3;
/// Words per slot (32 MiB): large enough that a copy runs at full PCIe speed and a launch
/// amortises its overhead, small enough that three pinned buffers are cheap.
pub const SLOT_WORDS: usize = 4 << 20;
/// Inputs folded by one launch when inputs are cut into word ranges.
const GROUP: usize = 16;
/// Words each host thread copies into a pinned buffer at a time.
const FILL_BLOCK: usize = 1 << 16;

/// Runs `f`, turning a panic inside the bindings (they panic on a missing library or symbol)
/// into an error, so that a broken installation means "no GPU", not a dead process.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(CudaError::Panicked(msg))
    })
}

/// A context on one device with a CUDA C source compiled for it.
pub struct Opened {
    pub ctx: Arc<CudaContext>,
    pub module: Arc<CudaModule>,
    pub name: String,
    pub capability: (i32, i32),
}

/// Opens device `ordinal` (driver and NVRTC loaded with dlopen; a missing one is a typed error)
/// and compiles `source` for its own architecture. Event tracking is off: every user of these
/// contexts orders its work itself (one stream, or explicit events).
pub fn open_compiled(ordinal: usize, source: &str, file: &str) -> Result<Opened, CudaError> {
    // SAFETY: only tries to dlopen the libraries, loading no symbol.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    let count = CudaContext::device_count()?;
    if count <= 0 || ordinal >= count as usize {
        return Err(CudaError::NoDevice);
    }
    let ctx = CudaContext::new(ordinal)?;
    // SAFETY: no allocation exists yet in this context object.
    unsafe { ctx.disable_event_tracking() };
    let name = ctx.name()?;
    let capability = ctx.compute_capability()?;
    // virtual architecture of this device: NVRTC emits PTX that the driver finalises for
    // exactly this GPU (sm_90 on an H100 or H200)
    let arch = format!("compute_{}{}", capability.0, capability.1);
    let ptx = nvrtc::compile_ptx_with_opts(
        source,
        CompileOptions {
            options: vec![format!("--gpu-architecture={arch}")],
            name: Some(file.into()),
            ..Default::default()
        },
    )
    .map_err(|e| CudaError::Compile {
        arch: arch.clone(),
        log: e.to_string(),
    })?;
    let module = ctx.load_module(ptx)?;
    Ok(Opened {
        ctx,
        module,
        name,
        capability,
    })
}

struct Slot {
    host: PinnedHostSlice<u64>,
    dev: CudaSlice<u64>,
    stream: Arc<CudaStream>,
    /// Recorded on `stream` after the copy into `dev`: the kernel waits on it, and the host
    /// waits on it before refilling `host`.
    copied: CudaEvent,
    /// Recorded on the compute stream after the kernel that read `dev`: the next copy into
    /// `dev` waits on it.
    consumed: CudaEvent,
}

/// A CUDA device with the aggregation kernel loaded.
pub struct Device {
    ctx: Arc<CudaContext>,
    name: String,
    capability: (i32, i32),
    sms: u32,
    fold: CudaFunction,
    compute: Arc<CudaStream>,
    /// One batch streams at a time (they share the slots); accumulators fold in turn.
    slots: Mutex<Vec<Slot>>,
    slot_words: usize,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("capability", &self.capability)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Opens device `ordinal`, compiles the kernel for it and allocates the staging slots.
    pub fn open(ordinal: usize) -> Result<Arc<Self>, CudaError> {
        Self::open_with_slots(ordinal, SLOT_WORDS)
    }

    /// [`Device::open`] with staging slots of `slot_words` words (tests use small ones to
    /// exercise the splitting of batches and of ciphertexts larger than a slot).
    pub fn open_with_slots(ordinal: usize, slot_words: usize) -> Result<Arc<Self>, CudaError> {
        guarded(|| Self::open_unguarded(ordinal, slot_words.max(1024)))
    }

    fn open_unguarded(ordinal: usize, slot_words: usize) -> Result<Arc<Self>, CudaError> {
        let opened = open_compiled(ordinal, FOLD_SOURCE, "heal_fold.cu")?;
        let (ctx, module) = (opened.ctx, opened.module);
        let (name, capability) = (opened.name, opened.capability);
        let sms =
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let fold = module.load_function(FOLD_KERNEL)?;
        let compute = ctx.new_stream()?;
        let mut slots = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            let stream = ctx.new_stream()?;
            // SAFETY: the buffers are written before they are read (fill, then copy).
            // Write-combined pinned memory: the host only writes it and the device only reads
            // it, which is the fastest kind for host-to-device copies.
            let host = unsafe { ctx.alloc_pinned::<u64>(slot_words) }?;
            let dev = unsafe { stream.alloc::<u64>(slot_words) }?;
            slots.push(Slot {
                host,
                dev,
                copied: ctx.new_event(None)?,
                consumed: ctx.new_event(None)?,
                stream,
            });
        }
        // the slot buffers are allocated in stream order on their copy streams; the whole
        // context must reach that point before other streams may touch them
        ctx.synchronize()?;
        Ok(Arc::new(Self {
            ctx,
            name,
            capability,
            sms: sms.max(1) as u32,
            fold,
            compute,
            slots: Mutex::new(slots),
            slot_words,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    /// A zero sum of `words` words over the primes `moduli` with N = `n` words per limb.
    pub fn new_sum(
        self: &Arc<Self>,
        moduli: &[u64],
        n: usize,
        words: usize,
    ) -> Result<Sum, CudaError> {
        guarded(|| {
            self.ctx.bind_to_thread()?;
            let data = self.compute.alloc_zeros::<u64>(words)?;
            let moduli_dev = self.compute.clone_htod(moduli)?;
            self.compute.synchronize()?;
            Ok(Sum {
                device: self.clone(),
                data,
                moduli: moduli.to_vec(),
                moduli_dev,
                log_n: n.trailing_zeros(),
                words,
            })
        })
    }

    fn grid(&self, span: usize) -> LaunchConfig {
        let blocks = span.div_ceil(FOLD_BLOCK as usize).max(1);
        // a few waves of blocks per SM; the grid-stride loop does the rest
        let blocks = blocks.min(self.sms as usize * 32) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (FOLD_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Launches the kernel on the compute stream (pointers are device addresses).
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        acc: sys::CUdeviceptr,
        inputs: sys::CUdeviceptr,
        consts: sys::CUdeviceptr,
        moduli: sys::CUdeviceptr,
        count: usize,
        first: usize,
        span: usize,
        log_n: u32,
        level: usize,
    ) -> Result<(), CudaError> {
        let count = count as u32;
        let first = first as u64;
        let span64 = span as u64;
        let level = level as u32;
        let mut b = self.compute.launch_builder(&self.fold);
        b.arg(&acc)
            .arg(&inputs)
            .arg(&consts)
            .arg(&moduli)
            .arg(&count)
            .arg(&first)
            .arg(&span64)
            .arg(&log_n)
            .arg(&level);
        // SAFETY: the arguments match the kernel's signature in kernels.rs; every pointer
        // covers the words the kernel reads or writes (checked by the callers).
        unsafe { b.launch(self.grid(span)) }?;
        Ok(())
    }

    /// Measured device-to-device copy bandwidth in bytes per second (read + write, as CUDA's
    /// bandwidthTest counts it), copying `bytes` `reps` times.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64, CudaError> {
        guarded(|| {
            self.ctx.bind_to_thread()?;
            let words = bytes / 8;
            let src = self.compute.alloc_zeros::<u64>(words)?;
            let mut dst = self.compute.alloc_zeros::<u64>(words)?;
            // one warm-up copy, then the timed ones
            self.compute.memcpy_dtod(&src, &mut dst)?;
            let ms = self.time(|| {
                for _ in 0..reps {
                    self.compute.memcpy_dtod(&src, &mut dst)?;
                }
                Ok(())
            })?;
            Ok(2.0 * (words * 8 * reps) as f64 / (ms / 1e3))
        })
    }

    /// Milliseconds the work `f` enqueues on the compute stream takes on the device.
    pub fn time(&self, f: impl FnOnce() -> Result<(), CudaError>) -> Result<f64, CudaError> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags)?;
        let end = self.ctx.new_event(flags)?;
        start.record(&self.compute)?;
        f()?;
        end.record(&self.compute)?;
        end.synchronize()?;
        Ok(f64::from(start.elapsed_ms(&end)?))
    }

    /// Copies `words` host words to a new device buffer (for inputs kept resident).
    pub fn upload(&self, words: &[u64]) -> Result<CudaSlice<u64>, CudaError> {
        guarded(|| {
            self.ctx.bind_to_thread()?;
            let d = self.compute.clone_htod(words)?;
            self.compute.synchronize()?;
            Ok(d)
        })
    }
}

/// A running sum on the device: words in the CPU accumulator's layout, each below its prime.
pub struct Sum {
    device: Arc<Device>,
    data: CudaSlice<u64>,
    moduli: Vec<u64>,
    moduli_dev: CudaSlice<u64>,
    log_n: u32,
    words: usize,
}

impl Sum {
    fn level(&self) -> usize {
        self.moduli.len()
    }

    fn consts(&self, weight: u64) -> impl Iterator<Item = u64> + '_ {
        self.moduli.iter().flat_map(move |&q| {
            let c = WeightConst::new(weight, q);
            [c.w, c.w_shoup]
        })
    }

    /// Streams a batch through the staging slots and waits for the result.
    fn fold_host(&mut self, inputs: &[Input<'_>]) -> Result<(), CudaError> {
        for (segments, _) in inputs {
            if segments.iter().map(|s| s.len()).sum::<usize>() != self.words {
                return Err(CudaError::Driver(
                    "an input does not have the accumulator's size".into(),
                ));
            }
        }
        let dev = self.device.clone();
        dev.ctx.bind_to_thread()?;
        let mut slots = dev.slots.lock().unwrap_or_else(|e| e.into_inner());
        let level = self.level();
        let per_input = 2 * level;
        let room = dev.slot_words;
        if per_input >= room {
            return Err(CudaError::Driver(format!(
                "{level} limbs do not fit a staging slot of {room} words"
            )));
        }
        // whole inputs, as many as fit a slot; inputs too large for that go in word ranges
        // sized so that GROUP of them share a launch (the accumulator is read and written
        // once per launch, so this keeps its traffic at 2/GROUP of the inputs')
        let (span, group) = if self.words + per_input <= room {
            (self.words, room / (self.words + per_input))
        } else {
            let group = inputs
                .len()
                .clamp(1, GROUP)
                .min(room / (2 * per_input))
                .max(1);
            ((room / group) - per_input, group)
        };
        let acc_base = self.data.device_ptr(&dev.compute).0;
        let moduli = self.moduli_dev.device_ptr(&dev.compute).0;
        let mut k = 0usize;
        for first in (0..self.words).step_by(span) {
            let len = span.min(self.words - first);
            for chunk in inputs.chunks(group) {
                let slot = &mut slots[k % SLOTS];
                k += 1;
                // the copy that last read this pinned buffer must be done before it is refilled
                slot.copied.synchronize()?;
                let data_words = chunk.len() * len;
                let total = data_words + chunk.len() * per_input;
                {
                    let host = slot.host.as_mut_slice()?;
                    let (data, consts) = host[..total].split_at_mut(data_words);
                    data.par_chunks_mut(len).zip(chunk.par_iter()).for_each(
                        |(dst, (segments, _))| {
                            dst.par_chunks_mut(FILL_BLOCK)
                                .enumerate()
                                .for_each(|(b, d)| copy_range(segments, first + b * FILL_BLOCK, d))
                        },
                    );
                    for (dst, c) in consts
                        .iter_mut()
                        .zip(chunk.iter().flat_map(|(_, w)| self.consts(*w)))
                    {
                        *dst = c;
                    }
                }
                // the kernel that last read this device buffer must be done before it is
                // overwritten
                slot.stream.wait(&slot.consumed)?;
                let dst = slot.dev.device_ptr(&slot.stream).0;
                let src = &slot.host.as_slice()?[..total];
                // SAFETY: `dst` holds slot_words ≥ total words; `src` is pinned and is not
                // written again before `copied` completes.
                unsafe { result::memcpy_htod_async(dst, src, slot.stream.cu_stream()) }?;
                slot.copied.record(&slot.stream)?;
                dev.compute.wait(&slot.copied)?;
                dev.launch(
                    acc_base + (first * 8) as u64,
                    dst,
                    dst + (data_words * 8) as u64,
                    moduli,
                    chunk.len(),
                    first,
                    len,
                    self.log_n,
                    level,
                )?;
                slot.consumed.record(&dev.compute)?;
            }
        }
        dev.compute.synchronize()?;
        dev.ctx.check_err()?;
        Ok(())
    }

    /// Folds `count` inputs already on the device, back to back in `inputs`: the kernel alone,
    /// at device memory speed. Returns the kernel's milliseconds.
    pub fn fold_resident(
        &mut self,
        inputs: &CudaSlice<u64>,
        weights: &[u64],
    ) -> Result<f64, CudaError> {
        let dev = self.device.clone();
        guarded(|| {
            if inputs.len() < weights.len() * self.words {
                return Err(CudaError::Driver(
                    "the resident inputs are too short".into(),
                ));
            }
            dev.ctx.bind_to_thread()?;
            let consts: Vec<u64> = weights.iter().flat_map(|&w| self.consts(w)).collect();
            let consts_dev = dev.compute.clone_htod(&consts)?;
            dev.compute.synchronize()?;
            let acc = self.data.device_ptr(&dev.compute).0;
            let input = inputs.device_ptr(&dev.compute).0;
            let c = consts_dev.device_ptr(&dev.compute).0;
            let m = self.moduli_dev.device_ptr(&dev.compute).0;
            let ms = dev.time(|| {
                dev.launch(
                    acc,
                    input,
                    c,
                    m,
                    weights.len(),
                    0,
                    self.words,
                    self.log_n,
                    self.level(),
                )
            })?;
            dev.ctx.check_err()?;
            Ok(ms)
        })
    }
}

/// Copies words `first..first + dst.len()` of the concatenation of `segments` into `dst`.
fn copy_range(segments: &[&[u64]], mut first: usize, mut dst: &mut [u64]) {
    for s in segments {
        if dst.is_empty() {
            return;
        }
        if first >= s.len() {
            first -= s.len();
            continue;
        }
        let take = dst.len().min(s.len() - first);
        let (head, rest) = dst.split_at_mut(take);
        head.copy_from_slice(&s[first..first + take]);
        dst = rest;
        first = 0;
    }
}

impl DeviceSum for Sum {
    fn fold(&mut self, inputs: &[Input<'_>]) -> Result<(), CudaError> {
        guarded(|| self.fold_host(inputs))
    }

    fn read(&mut self, out: &mut [u64]) -> Result<(), CudaError> {
        guarded(|| {
            let dev = &self.device;
            dev.ctx.bind_to_thread()?;
            dev.compute.memcpy_dtoh(&self.data, out)?;
            dev.compute.synchronize()?;
            dev.ctx.check_err()?;
            Ok(())
        })
    }
}
