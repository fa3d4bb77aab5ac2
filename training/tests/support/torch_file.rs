//! Writes a state dict as `torch.save` does (the zip container of PyTorch ≥ 1.6: a protocol-2
//! pickle of an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls, one stored entry per
//! storage), so that tests need neither PyTorch nor a download.

use std::io::Write;
use std::path::Path;

/// A tensor to write: `f32` values, or `i64` ones (a batch norm's `num_batches_tracked`).
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn unicode(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(b'c');
    p.extend(format!("{module}\n{name}\n").as_bytes());
}

fn int(p: &mut Vec<u8>, v: usize) {
    p.push(b'J');
    p.extend((v as i32).to_le_bytes());
}

fn tuple(p: &mut Vec<u8>, items: &[usize]) {
    if items.is_empty() {
        p.push(b')');
        return;
    }
    p.push(b'(');
    for &i in items {
        int(p, i);
    }
    p.push(b't');
}

fn ordered_dict(p: &mut Vec<u8>) {
    global(p, "collections", "OrderedDict");
    p.push(b')');
    p.push(b'R');
}

/// Writes `tensors` (name, shape, values) to `path` as a PyTorch state dict.
pub fn write(path: &Path, tensors: &[(String, Vec<usize>, Values)]) {
    let mut p = vec![0x80, 2];
    ordered_dict(&mut p);
    p.push(b'(');
    for (i, (name, shape, values)) in tensors.iter().enumerate() {
        unicode(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(b'(');
        // the persistent id: ('storage', type, key, location, numel)
        p.push(b'(');
        unicode(&mut p, "storage");
        let (storage, numel) = match values {
            Values::F32(v) => ("FloatStorage", v.len()),
            Values::I64(v) => ("LongStorage", v.len()),
        };
        global(&mut p, "torch", storage);
        unicode(&mut p, &i.to_string());
        unicode(&mut p, "cpu");
        int(&mut p, numel);
        p.push(b't');
        p.push(b'Q');
        int(&mut p, 0);
        tuple(&mut p, shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        tuple(&mut p, &stride);
        p.push(0x89); // False: requires_grad
        ordered_dict(&mut p);
        p.push(b't');
        p.push(b'R');
    }
    p.push(b'u');
    p.push(b'.');

    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&p).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    for (i, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), opts).unwrap();
        let bytes: Vec<u8> = match values {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", opts).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}
