//! Any bytes as a stored slot: a record or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [s0, s1, rest @ ..] = data else {
        return;
    };
    let seq = u64::from(*s0) << 8 | u64::from(*s1);
    if let Ok(stored) = fitedge::outbox::decode_slot_bytes(seq, rest) {
        assert_eq!(stored.seq, seq);
    }
});
