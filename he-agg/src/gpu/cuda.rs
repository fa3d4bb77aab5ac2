//! The primitives of [`Exec`] on a CUDA device: one stream, the kernels of [`super::kernels`]
//! compiled by NVRTC for the device, the tables resident. Job lists are uploaded once and kept
//! (an operation's lists are the same every time it runs at a level).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg, sys,
};

use super::exec::{
    DotShape, Exec, ExtendJob, GroupShape, LimbJob, LimbOp, MacJob, MapJob, SampleDist,
};
use super::kernels::{self, BLOCK, NTT_BLOCK};
use super::sample_kernel;
use super::tables::NttTables;
use crate::aggregate::CudaError;
use crate::aggregate::cuda::device::{guarded, open_compiled};
use crate::ring::expand::{constants, fine_bits};
use crate::ring::{Seed, ShoupConst};

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

/// The kernel's `MacPairs`: device pointers of up to `MAC_PAIRS` pairs, by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct MacPairs {
    a: [sys::CUdeviceptr; kernels::MAC_PAIRS],
    b: [sys::CUdeviceptr; kernels::MAC_PAIRS],
}

// SAFETY: plain old data of the layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for MacPairs {}

type TableCache<T> = Mutex<HashMap<Vec<T>, Arc<CudaSlice<T>>, BuildHasherDefault<SampleHasher>>>;

/// The CKKS kernels on one device.
pub struct CudaExec {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    funcs: HashMap<&'static str, CudaFunction>,
    log_n: u32,
    mods: CudaSlice<u64>,
    fwd: CudaSlice<u64>,
    inv: CudaSlice<u64>,
    n_inv: CudaSlice<u64>,
    /// the Gaussian sampler's cumulative thresholds
    cdt: CudaSlice<u64>,
    /// the flooding sampler's polynomial constants
    box_muller: CudaSlice<f64>,
    /// Whether one limb fits a block's shared memory.
    shared_ntt: bool,
    /// Whether the split NTT may run (N a multiple of its block's words).
    split_ntt: bool,
    /// Batches of fewer limbs than this run the split NTT (many blocks per limb).
    split_below: usize,
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

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> sys::CUdeviceptr {
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

    fn table32(&self, words: &[u32]) -> Result<Arc<CudaSlice<u32>>, CudaError> {
        cached(&self.u32_tables, &self.stream, words)
    }

    fn table64(&self, words: &[u64]) -> Result<Arc<CudaSlice<u64>>, CudaError> {
        cached(&self.u64_tables, &self.stream, words)
    }

    fn n(&self) -> u32 {
        1 << self.log_n
    }

    fn grid(&self, jobs: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.n().div_ceil(BLOCK), jobs as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn limb_table(&self, jobs: &[LimbJob]) -> Result<Arc<CudaSlice<u32>>, CudaError> {
        self.table32(
            &jobs
                .iter()
                .flat_map(|j| [j.limb, j.modulus])
                .collect::<Vec<_>>(),
        )
    }

    fn map_table(&self, jobs: &[MapJob]) -> Result<Arc<CudaSlice<u32>>, CudaError> {
        self.table32(
            &jobs
                .iter()
                .flat_map(|j| [j.dst, j.src, j.modulus, j.konst])
                .collect::<Vec<_>>(),
        )
    }

    fn const_table(&self, consts: &[ShoupConst]) -> Result<Arc<CudaSlice<u64>>, CudaError> {
        let mut words: Vec<u64> = consts.iter().flat_map(|c| [c.w, c.w_shoup]).collect();
        if words.is_empty() {
            // the kernel reads constant 0 even for operations that ignore it
            words = vec![0, 0];
        }
        self.table64(&words)
    }

    fn transform(
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

    fn map_raw(
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

impl Exec for CudaExec {
    type Buf = CudaSlice<u64>;

    fn zeros(&self, limbs: usize) -> Result<CudaSlice<u64>, CudaError> {
        Ok(self.stream.alloc_zeros::<u64>(limbs << self.log_n)?)
    }

    fn scratch(&self, limbs: usize) -> Result<CudaSlice<u64>, CudaError> {
        // SAFETY: the engine writes every limb of a scratch buffer before reading it.
        Ok(unsafe { self.stream.alloc::<u64>(limbs << self.log_n) }?)
    }

    fn upload(&self, words: &[u64]) -> Result<CudaSlice<u64>, CudaError> {
        Ok(self.stream.clone_htod(words)?)
    }

    fn download(&self, buf: &CudaSlice<u64>) -> Result<Vec<u64>, CudaError> {
        let v = self.stream.clone_dtoh(buf)?;
        self.stream.synchronize()?;
        Ok(v)
    }

    fn ntt(&self, buf: &mut CudaSlice<u64>, jobs: &[LimbJob]) -> Result<(), CudaError> {
        self.transform(buf, jobs, None)
    }

    fn intt(
        &self,
        buf: &mut CudaSlice<u64>,
        jobs: &[LimbJob],
        normalize: bool,
    ) -> Result<(), CudaError> {
        self.transform(buf, jobs, Some(normalize))
    }

    fn map(
        &self,
        op: LimbOp,
        dst: &mut CudaSlice<u64>,
        src: &CudaSlice<u64>,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError> {
        let s = &self.stream;
        self.map_raw(op, ptr(dst, s), ptr(src, s), jobs, consts)
    }

    fn map_within(
        &self,
        op: LimbOp,
        buf: &mut CudaSlice<u64>,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError> {
        let p = ptr(buf, &self.stream);
        self.map_raw(op, p, p, jobs, consts)
    }

    fn extend(
        &self,
        dst: &mut CudaSlice<u64>,
        src: &CudaSlice<u64>,
        jobs: &[ExtendJob],
        rows: &[u64],
    ) -> Result<(), CudaError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        let table = self.table32(
            &jobs
                .iter()
                .flat_map(|j| [j.dst, j.modulus, j.first, j.count, j.row])
                .collect::<Vec<_>>(),
        )?;
        let rows = self.table64(rows)?;
        let (d, x, t, r, mods) = (
            ptr(dst, s),
            ptr(src, s),
            ptr(&table, s),
            ptr(&rows, s),
            ptr(&self.mods, s),
        );
        let log_n = self.log_n;
        let mut l = s.launch_builder(&self.funcs[kernels::EXTEND]);
        l.arg(&d).arg(&x).arg(&t).arg(&r).arg(&mods).arg(&log_n);
        // SAFETY: arguments match the kernel; job limbs and rows lie inside the buffers.
        unsafe { l.launch(self.grid(jobs.len())) }?;
        Ok(())
    }

    fn dot(
        &self,
        out: &mut CudaSlice<u64>,
        digits: &CudaSlice<u64>,
        key: &CudaSlice<u64>,
        qp: &[u32],
        shape: DotShape,
    ) -> Result<(), CudaError> {
        let s = &self.stream;
        let table = self.table32(qp)?;
        let (o, dg, k, t, mods) = (
            ptr(out, s),
            ptr(digits, s),
            ptr(key, s),
            ptr(&table, s),
            ptr(&self.mods, s),
        );
        let (log_n, ndig, width, key_limbs) = (
            self.log_n,
            shape.digits as u32,
            shape.width as u32,
            shape.key_limbs as u32,
        );
        let mut l = s.launch_builder(&self.funcs[kernels::DOT]);
        l.arg(&o)
            .arg(&dg)
            .arg(&k)
            .arg(&t)
            .arg(&mods)
            .arg(&log_n)
            .arg(&ndig)
            .arg(&width)
            .arg(&key_limbs);
        // SAFETY: arguments match the kernel; the engine sizes the buffers by `shape`.
        unsafe { l.launch(self.grid(2 * shape.width)) }?;
        Ok(())
    }

    fn tensor(
        &self,
        out: &mut CudaSlice<u64>,
        a: &CudaSlice<u64>,
        b: &CudaSlice<u64>,
        level: usize,
    ) -> Result<(), CudaError> {
        let s = &self.stream;
        let (o, x, y, mods) = (ptr(out, s), ptr(a, s), ptr(b, s), ptr(&self.mods, s));
        let (log_n, lv) = (self.log_n, level as u32);
        let mut l = s.launch_builder(&self.funcs[kernels::TENSOR]);
        l.arg(&o).arg(&x).arg(&y).arg(&mods).arg(&log_n).arg(&lv);
        // SAFETY: arguments match the kernel; the engine sizes the buffers by `level`.
        unsafe { l.launch(self.grid(3 * level)) }?;
        Ok(())
    }

    fn mac(
        &self,
        out: &mut CudaSlice<u64>,
        pairs: &[(&CudaSlice<u64>, &CudaSlice<u64>)],
        jobs: &[MacJob],
        accumulate: bool,
    ) -> Result<(), CudaError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        let table = self.table32(
            &jobs
                .iter()
                .flat_map(|j| [j.dst, j.modulus, j.products, j.a[0], j.a[1], j.b[0], j.b[1]])
                .collect::<Vec<_>>(),
        )?;
        let (o, t, mods) = (ptr(out, s), ptr(&table, s), ptr(&self.mods, s));
        let log_n = self.log_n;
        // an empty list still writes zeros (one launch with no pairs)
        let chunks: Vec<_> = if pairs.is_empty() {
            vec![&pairs[..0]]
        } else {
            pairs.chunks(kernels::MAC_PAIRS).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut pp = MacPairs {
                a: [0; kernels::MAC_PAIRS],
                b: [0; kernels::MAC_PAIRS],
            };
            for (k, (a, b)) in chunk.iter().enumerate() {
                pp.a[k] = ptr(a, s);
                pp.b[k] = ptr(b, s);
            }
            let (count, acc) = (chunk.len() as u32, u32::from(accumulate || i > 0));
            let mut l = s.launch_builder(&self.funcs[kernels::MAC]);
            l.arg(&o)
                .arg(&pp)
                .arg(&count)
                .arg(&acc)
                .arg(&t)
                .arg(&mods)
                .arg(&log_n);
            // SAFETY: arguments match the kernel (MacPairs is laid out as the source's
            // struct); every pair's buffers hold the limbs the jobs name (the engine checks
            // levels) and outlive the launch (freed stream-ordered).
            unsafe { l.launch(self.grid(jobs.len())) }?;
        }
        Ok(())
    }

    fn group_product(
        &self,
        outs: &mut [&mut CudaSlice<u64>],
        xs: &[&CudaSlice<u64>],
        cols: &[u32],
        weights: &CudaSlice<u64>,
        shape: GroupShape,
    ) -> Result<(), CudaError> {
        if shape.rows == 0 || outs.len() < shape.rows {
            return Ok(());
        }
        let s = &self.stream;
        let cols_t = self.table32(cols)?;
        // the ciphertexts change with every call: their pointers are uploaded, not cached
        let op = s.clone_htod(&outs.iter().map(|o| ptr(o, s)).collect::<Vec<u64>>())?;
        let xp = s.clone_htod(&xs.iter().map(|x| ptr(x, s)).collect::<Vec<u64>>())?;
        let (o, x, c, w, mods) = (
            ptr(&op, s),
            ptr(&xp, s),
            ptr(&cols_t, s),
            ptr(weights, s),
            ptr(&self.mods, s),
        );
        let log_n = self.log_n;
        let (rows, ncols, parts, level, acc) = (
            shape.rows as u32,
            cols.len() as u32,
            shape.parts as u32,
            shape.level as u32,
            u32::from(shape.accumulate),
        );
        let mut l = s.launch_builder(&self.funcs[kernels::GROUP]);
        l.arg(&o)
            .arg(&x)
            .arg(&c)
            .arg(&w)
            .arg(&mods)
            .arg(&log_n)
            .arg(&rows)
            .arg(&ncols)
            .arg(&parts)
            .arg(&level)
            .arg(&acc);
        // SAFETY: arguments match the kernel; the engine checks every output and input holds
        // `parts × level` limbs, every column indexes `xs` and the weights hold
        // `level × rows × cols` words; the buffers outlive the launch (freed stream-ordered).
        unsafe { l.launch(self.grid(shape.rows * shape.parts * shape.level)) }?;
        Ok(())
    }

    fn permute(
        &self,
        dst: &mut CudaSlice<u64>,
        src: &CudaSlice<u64>,
        jobs: &[MapJob],
        map: &[u32],
        add: bool,
    ) -> Result<(), CudaError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        let (table, map) = (self.map_table(jobs)?, self.table32(map)?);
        let (d, x, t, m) = (ptr(dst, s), ptr(src, s), ptr(&table, s), ptr(&map, s));
        let (mods, log_n, add) = (ptr(&self.mods, s), self.log_n, u32::from(add));
        let mut l = s.launch_builder(&self.funcs[kernels::PERMUTE]);
        l.arg(&d)
            .arg(&x)
            .arg(&t)
            .arg(&m)
            .arg(&mods)
            .arg(&log_n)
            .arg(&add);
        // SAFETY: arguments match the kernel; job limbs lie inside the buffers.
        unsafe { l.launch(self.grid(jobs.len())) }?;
        Ok(())
    }

    fn sample(
        &self,
        dst: &mut CudaSlice<u64>,
        first: usize,
        seeds: &[Seed],
        dist: SampleDist,
        moduli: &[u32],
    ) -> Result<(), CudaError> {
        if seeds.is_empty() || moduli.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        let key_words: zeroize::Zeroizing<Vec<u32>> = zeroize::Zeroizing::new(
            seeds
                .iter()
                .flat_map(|seed| {
                    seed.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                })
                .collect(),
        );
        let mut keys = s.clone_htod(key_words.as_slice())?;
        let moduli = self.table32(moduli)?;
        let (code, sigma, fine) = match dist {
            SampleDist::Ternary => (sample_kernel::TERNARY, 0.0, 0),
            SampleDist::Gaussian => (sample_kernel::GAUSSIAN, 0.0, 0),
            SampleDist::Flooding { sigma } => (sample_kernel::FLOODING, sigma, fine_bits(sigma)),
        };
        let per = if code == sample_kernel::FLOODING {
            4
        } else {
            8
        };
        let threads = seeds.len() as u64 * u64::from(self.n() / per);
        let (d, k, m) = (ptr(dst, s), ptr(&keys, s), ptr(&moduli, s));
        let (mods, cdt, bm) = (
            ptr(&self.mods, s),
            ptr(&self.cdt, s),
            ptr(&self.box_muller, s),
        );
        let (first, nseeds, level) = (first as u32, seeds.len() as u32, moduli.len() as u32);
        let cdt_len = self.cdt.len() as u32;
        let log_n = self.log_n;
        let mut l = s.launch_builder(&self.funcs[sample_kernel::SAMPLE]);
        l.arg(&d)
            .arg(&first)
            .arg(&k)
            .arg(&nseeds)
            .arg(&code)
            .arg(&m)
            .arg(&level)
            .arg(&mods)
            .arg(&cdt)
            .arg(&cdt_len)
            .arg(&bm)
            .arg(&sigma)
            .arg(&fine)
            .arg(&log_n);
        let cfg = LaunchConfig {
            grid_dim: (threads.div_ceil(u64::from(BLOCK)) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match the kernel; the engine sizes `dst` to hold
        // `first + seeds × moduli` limbs and every modulus index names a ring modulus.
        unsafe { l.launch(cfg) }?;
        // the seeds are secret: cleared in stream order, after the kernel has read them
        s.memset_zeros(&mut keys)?;
        Ok(())
    }

    fn wipe(&self, buf: &mut CudaSlice<u64>) -> Result<(), CudaError> {
        Ok(self.stream.memset_zeros(buf)?)
    }
}
