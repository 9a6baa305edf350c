//! Any MQTT payload into the profiles LAN devices use (JSON hubs, Wi-Fi
//! machines): the LAN message path.
#![no_main]

#[path = "catalogue.rs"]
mod catalogue;

use fitedge::profile::FrameSpec;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else {
        return;
    };
    let lan: Vec<_> = (catalogue::profiles().iter())
        .filter(|p| p.frame == FrameSpec::Message)
        .collect();
    catalogue::exercise(lan[*pick as usize % lan.len()], 0, rest);
});
