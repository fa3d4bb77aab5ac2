//! The plaintext item format of a `--plaintext` federation (the comparison run): updates as
//! little-endian `f32`, sums as little-endian `f64`, at most [`PLAIN_ITEM_VALUES`] per item.
//! Both ends use these, so the format is written once.

/// Values per item.
pub const PLAIN_ITEM_VALUES: usize = 8192;

/// Why an item is not a plaintext vector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlainItemError {
    #[error("{bytes} bytes is not 1..={PLAIN_ITEM_VALUES} values of {width} bytes")]
    Size { bytes: usize, width: usize },
    #[error("value {0} is not finite")]
    NotFinite(usize),
}

/// Items of a vector of `values` values at most.
pub fn max_items(values: usize) -> usize {
    values.div_ceil(PLAIN_ITEM_VALUES)
}

/// An update as items of little-endian `f32`.
pub fn encode_f32s(v: &[f32]) -> Vec<Vec<u8>> {
    v.chunks(PLAIN_ITEM_VALUES)
        .map(|c| c.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect()
}

/// A sum as items of little-endian `f64`.
pub fn encode_f64s(v: &[f64]) -> Vec<Vec<u8>> {
    v.chunks(PLAIN_ITEM_VALUES)
        .map(|c| c.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect()
}

fn check(b: &[u8], width: usize) -> Result<(), PlainItemError> {
    if b.is_empty() || !b.len().is_multiple_of(width) || b.len() / width > PLAIN_ITEM_VALUES {
        return Err(PlainItemError::Size {
            bytes: b.len(),
            width,
        });
    }
    Ok(())
}

/// One update item, every value finite.
pub fn decode_f32s(b: &[u8]) -> Result<Vec<f32>, PlainItemError> {
    check(b, 4)?;
    let v: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(PlainItemError::NotFinite(i)),
        None => Ok(v),
    }
}

/// One sum item, every value finite.
pub fn decode_f64s(b: &[u8]) -> Result<Vec<f64>, PlainItemError> {
    check(b, 8)?;
    let v: Vec<f64> = b
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(PlainItemError::NotFinite(i)),
        None => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        let v: Vec<f32> = (0..PLAIN_ITEM_VALUES + 3).map(|i| i as f32 * 0.5).collect();
        let items = encode_f32s(&v);
        assert_eq!(items.len(), 2);
        assert_eq!(max_items(v.len()), 2);
        let back: Vec<f32> = items.iter().flat_map(|i| decode_f32s(i).unwrap()).collect();
        assert_eq!(back, v);
        let s: Vec<f64> = v.iter().map(|&x| x as f64 * 3.0).collect();
        let back: Vec<f64> = encode_f64s(&s)
            .iter()
            .flat_map(|i| decode_f64s(i).unwrap())
            .collect();
        assert_eq!(back, s);
        assert!(decode_f32s(&[]).is_err());
        assert!(decode_f32s(&[0; 5]).is_err());
        assert!(decode_f64s(&[0; 12]).is_err());
        assert!(decode_f32s(&vec![0; 4 * (PLAIN_ITEM_VALUES + 1)]).is_err());
        assert_eq!(
            decode_f32s(&f32::NAN.to_le_bytes()),
            Err(PlainItemError::NotFinite(0))
        );
        assert_eq!(
            decode_f64s(&[1.0f64.to_le_bytes(), f64::INFINITY.to_le_bytes()].concat()),
            Err(PlainItemError::NotFinite(1))
        );
    }
}
