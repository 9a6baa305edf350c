//! Any value into every built-in GATT codec (picked by the first two bytes,
//! a characteristic UUID), alone and through the assembler that joins
//! multi-part records.
#![no_main]

use fitedge::gatt::{self, Assembler, Options};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let uuid = u16::from_be_bytes([*hi, *lo]);
    let codec = gatt::codec(uuid).unwrap_or(&gatt::CODECS[uuid as usize % gatt::CODECS.len()]);
    if let Ok(decoded) = gatt::decode(codec.uuid, rest, &Options::default()) {
        for value in &decoded.values {
            assert!(value.value.is_finite(), "{:04X}: {value:?}", codec.uuid);
        }
    }
    let mut assembler = Assembler::new(Options::default());
    for part in rest.chunks(1 + *lo as usize % 20) {
        let _ = assembler.push(codec.uuid, part);
    }
});
