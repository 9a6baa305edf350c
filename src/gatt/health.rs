//! Codecs for the health characteristics: Heart Rate, Weight Scale, Body
//! Composition, Blood Pressure, Health Thermometer and Pulse Oximeter.

use super::{bit, bit_names, Continuation, Decoded, GattError, Options, Reader};

/// Heart Rate Measurement 0x2A37.
pub fn heart_rate(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let hr = if bit(flags, 0) {
        r.u16("heart rate (u16)")? as f64
    } else {
        r.u8("heart rate (u8)")? as f64
    };
    out.value("heart_rate", "vital.heart_rate", hr, "/min");
    match flags >> 1 & 0b11 {
        2 => out.attribute("sensor_contact", false),
        3 => out.attribute("sensor_contact", true),
        _ => {}
    }
    if bit(flags, 3) {
        let kj = r.u16("energy expended")? as f64;
        out.value("energy_expended", "activity.energy", kj, "kJ");
    }
    if bit(flags, 4) {
        // At least one interval, and no stray byte.
        if r.remaining() == 0 || !r.remaining().is_multiple_of(2) {
            return Err(GattError::Truncated {
                field: "RR interval",
                offset: r.bytes.len() - r.remaining() % 2,
                need: 2,
                len: r.bytes.len(),
            });
        }
        while r.remaining() > 0 {
            let rr = r.u16("RR interval")? as f64 / 1024.0;
            out.value("rr_interval", "vital.rr_interval", rr, "s");
        }
    }
    Ok(())
}

/// (mass unit, mass resolution, height unit, height resolution) for the
/// units flag of the weight and body composition characteristics.
fn mass_units(imperial: bool) -> (&'static str, f64, &'static str, f64) {
    if imperial {
        ("[lb_av]", 0.01, "[in_i]", 0.1)
    } else {
        ("kg", 0.005, "m", 0.001)
    }
}

fn user(r: &mut Reader, out: &mut Decoded) -> Result<(), GattError> {
    let user = r.u8("user id")?;
    if user != 0xFF {
        out.attribute("user_index", user);
    }
    Ok(())
}

/// Weight Measurement 0x2A9D. 0xFFFF weight is "measurement unsuccessful".
pub fn weight(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let (mass, mass_res, length, length_res) = mass_units(bit(flags, 0));
    let w = r.u16("weight")? as f64;
    out.value_or_absent("weight", "body.weight", w, 65535.0, mass_res, mass);
    if bit(flags, 1) {
        out.device_time = r.date_time("time stamp")?;
    }
    if bit(flags, 2) {
        user(r, out)?;
    }
    if bit(flags, 3) {
        let bmi = r.u16("BMI")? as f64;
        let height = r.u16("height")? as f64;
        // An unsuccessful measurement carries only time and user.
        if w != 65535.0 {
            out.value("bmi", "body.bmi", bmi * 0.1, "kg/m2");
            out.value("height", "body.height", height * length_res, length);
        }
    }
    Ok(())
}

/// Weight Scale Feature 0x2A9E: what the scale supports and how much of the
/// fixed wire resolution is meaningful.
pub fn weight_feature(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let f = r.u32("features")?;
    out.attribute("timestamp_supported", bit(f, 0));
    out.attribute("multiple_users_supported", bit(f, 1));
    out.attribute("bmi_supported", bit(f, 2));
    const WEIGHT_KG: [f64; 8] = [0.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005];
    const HEIGHT_M: [f64; 4] = [0.0, 0.01, 0.005, 0.001];
    if let Some(&res) = WEIGHT_KG.get((f >> 3 & 0xF) as usize).filter(|r| **r > 0.0) {
        out.attribute("weight_resolution_kg", res);
    }
    if let Some(&res) = HEIGHT_M.get((f >> 7 & 0x7) as usize).filter(|r| **r > 0.0) {
        out.attribute("height_resolution_m", res);
    }
    Ok(())
}

/// Body Composition Measurement 0x2A9C. Bit 12 marks one of two packets
/// of a record too long for the MTU; [`super::Assembler`] merges them.
pub fn body_composition(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u16("flags")? as u32;
    let (mass, mass_res, length, length_res) = mass_units(bit(flags, 0));
    let fat = r.u16("body fat percentage")? as f64;
    out.value_or_absent("body_fat", "body.fat_pct", fat, 65535.0, 0.1, "%");
    if bit(flags, 1) {
        out.device_time = r.date_time("time stamp")?;
    }
    if bit(flags, 2) {
        user(r, out)?;
    }
    if bit(flags, 3) {
        let kj = r.u16("basal metabolism")? as f64;
        out.value("basal_metabolism", "body.basal_metabolism", kj, "kJ/d");
    }
    if bit(flags, 4) {
        let pct = r.u16("muscle percentage")? as f64;
        out.value("muscle_percentage", "body.muscle_pct", pct * 0.1, "%");
    }
    let masses = [
        (5, "muscle_mass", "body.muscle_mass"),
        (6, "fat_free_mass", "body.fat_free_mass"),
        (7, "soft_lean_mass", "body.soft_lean_mass"),
        (8, "body_water_mass", "body.water_mass"),
    ];
    for (b, field, metric) in masses {
        if bit(flags, b) {
            let v = r.u16(field)? as f64;
            out.value(field, metric, v * mass_res, mass);
        }
    }
    if bit(flags, 9) {
        let ohm = r.u16("impedance")? as f64;
        out.value("impedance", "body.impedance", ohm * 0.1, "Ohm");
    }
    if bit(flags, 10) {
        let w = r.u16("weight")? as f64;
        out.value("weight", "body.weight", w * mass_res, mass);
    }
    if bit(flags, 11) {
        let h = r.u16("height")? as f64;
        out.value("height", "body.height", h * length_res, length);
    }
    if bit(flags, 12) {
        out.continuation = Continuation::MultiplePacket;
    }
    Ok(())
}

/// Blood Pressure Measurement 0x2A35 (and Intermediate Cuff Pressure).
pub fn blood_pressure(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let unit = if bit(flags, 0) { "kPa" } else { "mm[Hg]" };
    let sys = r.sfloat("systolic")?;
    let dia = r.sfloat("diastolic")?;
    let map = r.sfloat("mean arterial pressure")?;
    out.medfloat("systolic", "vital.bp_systolic", sys, unit);
    out.medfloat("diastolic", "vital.bp_diastolic", dia, unit);
    out.medfloat("mean_arterial_pressure", "vital.bp_mean", map, unit);
    if bit(flags, 1) {
        out.device_time = r.date_time("time stamp")?;
    }
    if bit(flags, 2) {
        let pulse = r.sfloat("pulse rate")?;
        out.medfloat("pulse_rate", "vital.pulse_rate", pulse, "/min");
    }
    if bit(flags, 3) {
        user(r, out)?;
    }
    if bit(flags, 4) {
        let status = r.u16("measurement status")? as u32;
        let names = [
            (0, "body_movement"),
            (1, "cuff_too_loose"),
            (2, "irregular_pulse"),
            (5, "improper_position"),
        ];
        out.attribute("measurement_status", bit_names(status, &names));
        let range = match status >> 3 & 0b11 {
            0 => "in_range",
            1 => "above_upper_limit",
            2 => "below_lower_limit",
            _ => "reserved",
        };
        out.attribute("pulse_rate_range", range);
    }
    Ok(())
}

/// Temperature Measurement 0x2A1C.
pub fn temperature(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let unit = if bit(flags, 0) { "[degF]" } else { "Cel" };
    let t = r.float("temperature")?;
    out.medfloat("temperature", "vital.body_temperature", t, unit);
    if bit(flags, 1) {
        out.device_time = r.date_time("time stamp")?;
    }
    if bit(flags, 2) {
        const SITES: [&str; 10] = [
            "reserved", "armpit", "body", "ear_lobe", "finger", "gi_tract", "mouth", "rectum",
            "toe", "tympanum",
        ];
        let site = r.u8("temperature type")?;
        out.attribute(
            "temperature_site",
            SITES.get(site as usize).copied().unwrap_or("reserved"),
        );
    }
    Ok(())
}

const PLX_MEASUREMENT_STATUS: [(u32, &str); 11] = [
    (5, "measurement_ongoing"),
    (6, "early_estimate"),
    (7, "validated"),
    (8, "fully_qualified"),
    (9, "from_storage"),
    (10, "demonstration"),
    (11, "testing"),
    (12, "calibration_ongoing"),
    (13, "unavailable"),
    (14, "questionable"),
    (15, "invalid"),
];

const PLX_DEVICE_STATUS: [(u32, &str); 16] = [
    (0, "extended_display_update_ongoing"),
    (1, "equipment_malfunction"),
    (2, "signal_processing_irregularity"),
    (3, "inadequate_signal"),
    (4, "poor_signal"),
    (5, "low_perfusion"),
    (6, "erratic_signal"),
    (7, "nonpulsatile_signal"),
    (8, "questionable_pulse"),
    (9, "signal_analysis_ongoing"),
    (10, "sensor_interference"),
    (11, "sensor_unconnected_to_user"),
    (12, "unknown_sensor_connected"),
    (13, "sensor_displaced"),
    (14, "sensor_malfunctioning"),
    (15, "sensor_disconnected"),
];

fn plx_status(r: &mut Reader, out: &mut Decoded, measurement: bool) -> Result<(), GattError> {
    if measurement {
        let s = r.u16("measurement status")? as u32;
        out.attribute("measurement_status", bit_names(s, &PLX_MEASUREMENT_STATUS));
    } else {
        let s = r.u24("device and sensor status")?;
        out.attribute("device_status", bit_names(s, &PLX_DEVICE_STATUS));
    }
    Ok(())
}

/// PLX Spot-check Measurement 0x2A5E.
pub fn plx_spot_check(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let spo2 = r.sfloat("SpO2")?;
    let pr = r.sfloat("pulse rate")?;
    out.medfloat("spo2", "vital.spo2", spo2, "%");
    out.medfloat("pulse_rate", "vital.pulse_rate", pr, "/min");
    if bit(flags, 0) {
        let time = r.date_time("time stamp")?;
        // With "device clock not set" the stamp is not wall-clock time.
        if !bit(flags, 4) {
            out.device_time = time;
        }
    }
    if bit(flags, 1) {
        plx_status(r, out, true)?;
    }
    if bit(flags, 2) {
        plx_status(r, out, false)?;
    }
    if bit(flags, 3) {
        let pai = r.sfloat("pulse amplitude index")?;
        out.medfloat("pulse_amplitude_index", "vital.perfusion_index", pai, "%");
    }
    if bit(flags, 4) {
        out.attribute("device_clock_set", false);
    }
    Ok(())
}

/// PLX Continuous Measurement 0x2A5F. The fast and slow averages become
/// attributes; the normal pair is the reading.
pub fn plx_continuous(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let spo2 = r.sfloat("SpO2 (normal)")?;
    let pr = r.sfloat("pulse rate (normal)")?;
    out.medfloat("spo2", "vital.spo2", spo2, "%");
    out.medfloat("pulse_rate", "vital.pulse_rate", pr, "/min");
    for (b, name) in [(0, "fast"), (1, "slow")] {
        if bit(flags, b) {
            let spo2 = r.sfloat("SpO2 (averaged)")?;
            let pr = r.sfloat("pulse rate (averaged)")?;
            for (key, v) in [("spo2", spo2), ("pulse_rate", pr)] {
                if let super::BinValue::Number(n) = v {
                    out.attribute(&format!("{key}_{name}"), n);
                }
            }
        }
    }
    if bit(flags, 2) {
        plx_status(r, out, true)?;
    }
    if bit(flags, 3) {
        plx_status(r, out, false)?;
    }
    if bit(flags, 4) {
        let pai = r.sfloat("pulse amplitude index")?;
        out.medfloat("pulse_amplitude_index", "vital.perfusion_index", pai, "%");
    }
    Ok(())
}
