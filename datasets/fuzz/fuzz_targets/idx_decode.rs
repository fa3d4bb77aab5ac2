//! MNIST's IDX decoders (`datasets::mnist`): any bytes give images, labels or an error, never a
//! panic or an allocation beyond what the bytes hold. (The unit tests' property tests run the
//! same on random bytes in every `cargo test`.)
//!
//!     cd datasets/fuzz && cargo +nightly fuzz run idx_decode -- -max_total_time=600
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((pixels, (n, h, w))) = datasets::mnist::parse_images(data) {
        assert_eq!(pixels.len(), n * h * w);
    }
    if let Ok(labels) = datasets::mnist::parse_labels(data) {
        assert!(labels.iter().all(|&l| l <= 9));
    }
});
