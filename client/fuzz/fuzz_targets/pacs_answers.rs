//! What a PACS answers `client pacs` (`client::pacs`): QIDO-RS's DICOM JSON, WADO-RS's
//! multipart/related body and the DICOM headers of what it holds. Any bytes give series,
//! instances or an error, never a panic; every UID that comes out is one a URL can carry. (The
//! unit tests' property tests run the same on random bytes in every `cargo test`.)
//!
//!     cd client/fuzz && cargo +nightly fuzz run pacs_answers -- -max_total_time=600
#![no_main]

use client::pacs::{dicomweb, query, report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(series) = query::parse_series(data, "CT") {
        for s in series {
            assert!(query::check_uid(&s.study).is_ok() && query::check_uid(&s.series).is_ok());
        }
    }
    if let Ok(sops) = query::parse_instances(data) {
        assert!(sops.iter().all(|u| query::check_uid(u).is_ok()));
    }
    let _ = dicomweb::parts("multipart/related; boundary=b", data.to_vec(), 16);
    if let Ok(h) = report::read_header(data) {
        assert!(query::check_uid(&h.sop_instance).is_ok());
    }
});
