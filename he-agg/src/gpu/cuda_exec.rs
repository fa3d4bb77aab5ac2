//! [`Exec`] on a CUDA device: each primitive as launches of [`super::kernels`] on the
//! executor's stream ([`CudaExec`] opens the device and holds the tables).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg, sys};

use super::cuda::{CudaExec, ptr};
use super::exec::{
    DotShape, Exec, ExtendJob, GroupShape, LimbJob, LimbOp, MacJob, MapJob, SampleDist,
};
use super::kernels::{self, BLOCK};
use super::sample_kernel;
use crate::aggregate::CudaError;
use crate::ring::expand::fine_bits;
use crate::ring::{Seed, ShoupConst};

/// The kernel's `MacPairs`: device pointers of up to `MAC_PAIRS` pairs, by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct MacPairs {
    a: [sys::CUdeviceptr; kernels::MAC_PAIRS],
    b: [sys::CUdeviceptr; kernels::MAC_PAIRS],
}

// SAFETY: plain old data of the layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for MacPairs {}

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
