//! The primitives of [`Exec`] on a CUDA device: one stream, the kernels of [`super::kernels`]
//! compiled by NVRTC for the device, the tables resident. Job lists are uploaded once and kept
//! (an operation's lists are the same every time it runs at a level). The primitives
//! themselves are in [`super::cuda_exec`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg, sys,
};

use super::exec::{LimbJob, LimbOp, MapJob};
use super::kernels::{self, BLOCK, NTT_BLOCK};
use super::sample_kernel;
use super::tables::NttTables;
use crate::aggregate::CudaError;
use crate::aggregate::cuda::device::{guarded, open_compiled};
use crate::ring::ShoupConst;
use crate::ring::expand::constants;

/// Hashes a table by its length and a few dozen sampled words: a lookup then costs a memcmp
/// (the map compares whole keys on a hash match), not a pass of SipHash over a 64 KiB Galois
/// map per launch.
#[derive(Default)]
struct SampleHasher(u64);

impl Hasher for SampleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let step = (bytes.len() / 32).max(8);
        let mut h = self.0 ^ bytes.len() as u64;
        for chunk in bytes
            .chunks(8)
            .step_by(step / 8)
            .chain(bytes.rchunks(8).take(1))
        {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        self.0 = h;
    }
}

type TableCache<T> = Mutex<HashMap<Vec<T>, Arc<CudaSlice<T>>, BuildHasherDefault<SampleHasher>>>;

/// The CKKS kernels on one device.
pub struct CudaExec {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) name: String,
    pub(super) funcs: HashMap<&'static str, CudaFunction>,
    pub(super) log_n: u32,
    pub(super) mods: CudaSlice<u64>,
    pub(super) fwd: CudaSlice<u64>,
    pub(super) inv: CudaSlice<u64>,
    pub(super) n_inv: CudaSlice<u64>,
    /// the Gaussian sampler's cumulative thresholds
    pub(super) cdt: CudaSlice<u64>,
    /// the flooding sampler's polynomial constants
    pub(super) box_muller: CudaSlice<f64>,
    /// Whether one limb fits a block's shared memory.
    pub(super) shared_ntt: bool,
    /// Whether the split NTT may run (N a multiple of its block's words).
    pub(super) split_ntt: bool,
    /// Batches of fewer limbs than this run the split NTT (many blocks per limb).
    pub(super) split_below: usize,
    u32_tables: TableCache<u32>,
    u64_tables: TableCache<u64>,
}

impl std::fmt::Debug for CudaExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExec")
            .field("device", &self.name)
            .field("shared_ntt", &self.shared_ntt)
            .finish_non_exhaustive()
    }
}

/// The device copy of `words`, uploaded on first use.
fn cached<T: cudarc::driver::DeviceRepr + Clone + Eq + std::hash::Hash>(
    cache: &TableCache<T>,
    stream: &Arc<CudaStream>,
    words: &[T],
) -> Result<Arc<CudaSlice<T>>, CudaError> {
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = cache.get(words) {
        return Ok(t.clone());
    }
    let t = Arc::new(stream.clone_htod(words)?);
    cache.insert(words.to_vec(), t.clone());
    Ok(t)
}

pub(super) fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> sys::CUdeviceptr {
    s.device_ptr(stream).0
}

impl CudaExec {
    /// Opens device `ordinal` for the ring of `tables`. `force_split` makes every NTT the split
    /// one (tests exercise both paths on any GPU).
    pub fn open(ordinal: usize, tables: &NttTables, force_split: bool) -> Result<Self, CudaError> {
        guarded(|| Self::open_unguarded(ordinal, tables, force_split))
    }

    fn open_unguarded(
        ordinal: usize,
        tables: &NttTables,
        force_split: bool,
    ) -> Result<Self, CudaError> {
        let source = [kernels::SOURCE, sample_kernel::SOURCE].concat();
        let opened = open_compiled(ordinal, &source, "heal_ckks.cu")?;
        let (ctx, module, name) = (opened.ctx, opened.module, opened.name);
        let mut funcs = HashMap::new();
        for k in kernels::ALL.into_iter().chain([sample_kernel::SAMPLE]) {
            funcs.insert(k, module.load_function(k)?);
        }
        let limb_bytes = 8 * tables.n();
        let optin = ctx.attribute(
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        )?;
        let split_ntt = tables.n() >= kernels::SPLIT_WORDS;
        let shared_ntt = limb_bytes <= optin.max(0) as usize && !(split_ntt && force_split);
        let sms =
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        if shared_ntt {
            for k in [kernels::NTT_FWD, kernels::NTT_INV] {
                funcs[k].set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    limb_bytes as i32,
                )?;
            }
        }
        let stream = ctx.new_stream()?;
        let exec = Self {
            mods: stream.clone_htod(&tables.mods)?,
            fwd: stream.clone_htod(&tables.fwd)?,
            inv: stream.clone_htod(&tables.inv)?,
            n_inv: stream.clone_htod(&tables.n_inv)?,
            cdt: stream.clone_htod(crate::ring::cdt_thresholds())?,
            box_muller: stream.clone_htod(&constants().to_words())?,
            ctx,
            stream,
            name,
            funcs,
            log_n: tables.log_n(),
            shared_ntt,
            split_ntt,
            // one block per limb fills the device from a few waves of limbs on
            split_below: if force_split {
                usize::MAX
            } else {
                4 * sms.max(1) as usize
            },
            u32_tables: Mutex::default(),
            u64_tables: Mutex::default(),
        };
        exec.stream.synchronize()?;
        Ok(exec)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a batch of `jobs` limbs is transformed one block per limb (else split over
    /// many blocks per limb, in two launches).
    pub fn one_block_ntt(&self, jobs: usize) -> bool {
        self.shared_ntt && !(self.split_ntt && jobs < self.split_below)
    }

    /// Milliseconds the device spends on the work `f` enqueues.
    pub fn time(&self, f: impl FnOnce() -> Result<(), CudaError>) -> Result<f64, CudaError> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags)?;
        let end = self.ctx.new_event(flags)?;
        start.record(&self.stream)?;
        f()?;
        end.record(&self.stream)?;
        end.synchronize()?;
        Ok(f64::from(start.elapsed_ms(&end)?))
    }

    /// Waits for everything enqueued.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize()?;
        Ok(())
    }

    pub(super) fn table32(&self, words: &[u32]) -> Result<Arc<CudaSlice<u32>>, CudaError> {
        cached(&self.u32_tables, &self.stream, words)
    }

    pub(super) fn table64(&self, words: &[u64]) -> Result<Arc<CudaSlice<u64>>, CudaError> {
        cached(&self.u64_tables, &self.stream, words)
    }

    pub(super) fn n(&self) -> u32 {
        1 << self.log_n
    }

    pub(super) fn grid(&self, jobs: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.n().div_ceil(BLOCK), jobs as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub(super) fn limb_table(&self, jobs: &[LimbJob]) -> Result<Arc<CudaSlice<u32>>, CudaError> {
        self.table32(
            &jobs
                .iter()
                .flat_map(|j| [j.limb, j.modulus])
                .collect::<Vec<_>>(),
        )
    }

    pub(super) fn map_table(&self, jobs: &[MapJob]) -> Result<Arc<CudaSlice<u32>>, CudaError> {
        self.table32(
            &jobs
                .iter()
                .flat_map(|j| [j.dst, j.src, j.modulus, j.konst])
                .collect::<Vec<_>>(),
        )
    }

    pub(super) fn const_table(
        &self,
        consts: &[ShoupConst],
    ) -> Result<Arc<CudaSlice<u64>>, CudaError> {
        let mut words: Vec<u64> = consts.iter().flat_map(|c| [c.w, c.w_shoup]).collect();
        if words.is_empty() {
            // the kernel reads constant 0 even for operations that ignore it
            words = vec![0, 0];
        }
        self.table64(&words)
    }

    pub(super) fn transform(
        &self,
        buf: &mut CudaSlice<u64>,
        jobs: &[LimbJob],
        inverse: Option<bool>,
    ) -> Result<(), CudaError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        let table = self.limb_table(jobs)?;
        let (b, t) = (ptr(buf, s), ptr(&table, s));
        let tw = ptr(
            if inverse.is_some() {
                &self.inv
            } else {
                &self.fwd
            },
            s,
        );
        let (mods, ninv) = (ptr(&self.mods, s), ptr(&self.n_inv, s));
        let log_n = self.log_n;
        let normalize = u32::from(inverse == Some(true));
        if self.one_block_ntt(jobs.len()) {
            let cfg = LaunchConfig {
                grid_dim: (jobs.len() as u32, 1, 1),
                block_dim: (NTT_BLOCK.min(self.n() / 2), 1, 1),
                shared_mem_bytes: 8 * self.n(),
            };
            let name = if inverse.is_some() {
                kernels::NTT_INV
            } else {
                kernels::NTT_FWD
            };
            let mut l = s.launch_builder(&self.funcs[name]);
            l.arg(&b).arg(&t).arg(&tw).arg(&mods);
            if inverse.is_some() {
                l.arg(&ninv);
            }
            l.arg(&log_n);
            if inverse.is_some() {
                l.arg(&normalize);
            }
            // SAFETY: arguments match the kernel; every job's limb lies inside `buf`
            // (the plans index buffers they allocate with enough limbs).
            unsafe { l.launch(cfg) }?;
            return Ok(());
        }
        let log_m = log_n.div_ceil(2);
        let cfg = LaunchConfig {
            grid_dim: (
                (jobs.len() * (self.n() as usize / kernels::SPLIT_WORDS)) as u32,
                1,
                1,
            ),
            block_dim: (kernels::SPLIT_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        for phase in 0u32..2 {
            let name = if inverse.is_some() {
                kernels::NTT_INV_SPLIT
            } else {
                kernels::NTT_FWD_SPLIT
            };
            let mut l = s.launch_builder(&self.funcs[name]);
            l.arg(&b).arg(&t).arg(&tw).arg(&mods);
            if inverse.is_some() {
                l.arg(&ninv);
            }
            l.arg(&log_n).arg(&log_m).arg(&phase);
            if inverse.is_some() {
                l.arg(&normalize);
            }
            // SAFETY: as above; N is a multiple of SPLIT_WORDS (checked when choosing).
            unsafe { l.launch(cfg) }?;
        }
        Ok(())
    }

    pub(super) fn map_raw(
        &self,
        op: LimbOp,
        dst: sys::CUdeviceptr,
        src: sys::CUdeviceptr,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        let (table, c) = (self.map_table(jobs)?, self.const_table(consts)?);
        let (t, c, mods) = (ptr(&table, s), ptr(&c, s), ptr(&self.mods, s));
        let (log_n, op) = (self.log_n, op as u32);
        let mut l = s.launch_builder(&self.funcs[kernels::MAP]);
        l.arg(&dst)
            .arg(&src)
            .arg(&t)
            .arg(&c)
            .arg(&mods)
            .arg(&log_n)
            .arg(&op);
        // SAFETY: arguments match the kernel; job limbs lie inside the buffers.
        unsafe { l.launch(self.grid(jobs.len())) }?;
        Ok(())
    }
}
