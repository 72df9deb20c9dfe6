//! `read_gguf` on arbitrary bytes: it must never panic, never allocate wildly, and agree with
//! itself whether it loads every array or walks past them.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use optimizer_core::gguf::{DataStatus, GgufErrorKind, MetadataValue, ReadOptions, read_gguf};

fuzz_target!(|data: &[u8]| {
    let lazy = read_gguf(Cursor::new(data), &ReadOptions::default());
    let full = read_gguf(Cursor::new(data), &ReadOptions::all_arrays());
    match (&lazy, &full) {
        (Ok(lazy), Ok(full)) => {
            assert_eq!(lazy.tensors, full.tensors);
            assert_eq!(lazy.data_offset, full.data_offset);
            assert_eq!(lazy.data, full.data);
            for ((k1, v1), (k2, v2)) in lazy.metadata.entries().iter().zip(full.metadata.entries()) {
                assert_eq!(k1, k2);
                if !matches!(v1, MetadataValue::Array(_)) {
                    assert!(
                        v1 == v2
                            || matches!(v1, MetadataValue::F32(f) if f.is_nan())
                            || matches!(v1, MetadataValue::F64(f) if f.is_nan())
                    );
                }
            }
            let file = full;
            assert!(file.alignment.is_power_of_two());
            assert_eq!(file.data_offset % file.alignment, 0);
            for t in &file.tensors {
                assert_eq!(Some(t.size.get()), t.ggml_type.tensor_bytes(&t.dims));
                assert_eq!(t.offset % file.alignment, 0);
            }
            if let DataStatus::Missing { expected_end, file_size } = file.data {
                assert!(expected_end > file_size);
                assert_eq!(file_size, data.len() as u64);
            }
        }
        // Walking past a string array does not check that it is UTF-8; loading it does.
        (Ok(_), Err(e)) => assert!(matches!(e.kind(), GgufErrorKind::InvalidUtf8 { .. }), "{e}"),
        (Err(e), Ok(_)) => panic!("rejected only without loading arrays: {e}"),
        (Err(a), Err(b)) => {
            let _ = (a.to_string(), b.to_string());
        }
    }
});
