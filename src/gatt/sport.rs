//! Codecs for the sport sensors: Cycling Speed and Cadence, Cycling Power
//! and Running Speed and Cadence. Speed and cadence from cumulative
//! counters need two samples; see [`super::assemble`].

use super::{bit, Decoded, GattError, Options, Reader};

fn wheel(r: &mut Reader, out: &mut Decoded, ticks_per_s: f64) -> Result<(), GattError> {
    let revs = r.u32("cumulative wheel revolutions")?;
    let time = r.u16("last wheel event time")?;
    out.value(
        "wheel_revolutions",
        "activity.wheel_revolutions",
        revs as f64,
        "{#}",
    );
    out.value(
        "wheel_event_time",
        "activity.wheel_event_time",
        time as f64 / ticks_per_s,
        "s",
    );
    out.counters.wheel = Some((revs, time, ticks_per_s));
    Ok(())
}

fn crank(r: &mut Reader, out: &mut Decoded) -> Result<(), GattError> {
    let revs = r.u16("cumulative crank revolutions")?;
    let time = r.u16("last crank event time")?;
    out.value(
        "crank_revolutions",
        "activity.crank_revolutions",
        revs as f64,
        "{#}",
    );
    out.value(
        "crank_event_time",
        "activity.crank_event_time",
        time as f64 / 1024.0,
        "s",
    );
    out.counters.crank = Some((revs, time));
    Ok(())
}

/// CSC Measurement 0x2A5B.
pub fn csc(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    if bit(flags, 0) {
        wheel(r, out, 1024.0)?;
    }
    if bit(flags, 1) {
        crank(r, out)?;
    }
    Ok(())
}

/// Cycling Power Measurement 0x2A63. Accumulated and extreme values become
/// attributes; power, balance, energy and the counters are readings.
pub fn cycling_power(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u16("flags")? as u32;
    let power = r.i16("instantaneous power")? as f64;
    out.value("power", "activity.power", power, "W");
    if bit(flags, 0) {
        let balance = r.u8("pedal power balance")? as f64 * 0.5;
        out.value(
            "pedal_power_balance",
            "activity.pedal_power_balance",
            balance,
            "%",
        );
        let reference = if bit(flags, 1) { "left" } else { "unknown" };
        out.attribute("pedal_power_balance_reference", reference);
    }
    if bit(flags, 2) {
        let torque = r.u16("accumulated torque")? as f64 / 32.0;
        out.attribute("accumulated_torque_nm", torque);
        let source = if bit(flags, 3) { "crank" } else { "wheel" };
        out.attribute("accumulated_torque_source", source);
    }
    if bit(flags, 4) {
        wheel(r, out, 2048.0)?;
    }
    if bit(flags, 5) {
        crank(r, out)?;
    }
    if bit(flags, 6) {
        let max = r.i16("maximum force magnitude")?;
        let min = r.i16("minimum force magnitude")?;
        out.attribute("max_force_n", max);
        out.attribute("min_force_n", min);
    }
    if bit(flags, 7) {
        let max = r.i16("maximum torque magnitude")? as f64 / 32.0;
        let min = r.i16("minimum torque magnitude")? as f64 / 32.0;
        out.attribute("max_torque_nm", max);
        out.attribute("min_torque_nm", min);
    }
    if bit(flags, 8) {
        // Two u12 in three octets, the maximum angle in the low 12 bits.
        let packed = r.u24("extreme angles")?;
        out.attribute("max_angle_deg", packed & 0xFFF);
        out.attribute("min_angle_deg", packed >> 12);
    }
    if bit(flags, 9) {
        out.attribute("top_dead_spot_angle_deg", r.u16("top dead spot angle")?);
    }
    if bit(flags, 10) {
        let angle = r.u16("bottom dead spot angle")?;
        out.attribute("bottom_dead_spot_angle_deg", angle);
    }
    if bit(flags, 11) {
        let kj = r.u16("accumulated energy")? as f64;
        out.value("accumulated_energy", "activity.energy", kj, "kJ");
    }
    if bit(flags, 12) {
        out.attribute("offset_compensation", true);
    }
    Ok(())
}

/// RSC Measurement 0x2A53.
pub fn rsc(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u8("flags")? as u32;
    let speed = r.u16("instantaneous speed")? as f64 / 256.0;
    let cadence = r.u8("instantaneous cadence")? as f64;
    out.value("speed", "activity.speed", speed, "m/s");
    out.value("cadence", "activity.cadence", cadence, "/min");
    if bit(flags, 0) {
        let stride = r.u16("stride length")? as f64 / 100.0;
        out.value("stride_length", "activity.stride_length", stride, "m");
    }
    if bit(flags, 1) {
        let distance = r.u32("total distance")? as f64 / 10.0;
        out.value("total_distance", "activity.distance", distance, "m");
    }
    out.attribute("motion", if bit(flags, 2) { "running" } else { "walking" });
    Ok(())
}
