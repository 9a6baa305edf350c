//! Codecs for the Fitness Machine Service (0x1826): treadmill, cross
//! trainer, rower and indoor bike data, training status and machine status.
//!
//! The four machine data characteristics share their field kinds, so each
//! is a table of (flag bit, field). Bit 0 is "More Data" with inverted
//! logic: the first field is present when it is 0, and a record split over
//! several notifications ends with the one that has it clear.
//! "Data Not Available" sentinels put the metric under `absent`.

use super::{bit, Continuation, Decoded, GattError, Options, Reader};

/// One field kind of the machine data characteristics.
#[derive(Debug, Clone, Copy)]
enum Field {
    Speed,
    AverageSpeed,
    Distance,
    /// Inclination (0.1 %) and ramp angle (0.1 deg).
    InclineRamp,
    /// Positive and negative elevation gain, at this resolution in m.
    Elevation(f64),
    /// Treadmill pace (km/min, 0.1), width set by [`Options::pace_bytes`].
    Pace(&'static str),
    /// Total energy, energy per hour, energy per minute.
    Energy,
    HeartRate,
    Met,
    ElapsedTime,
    RemainingTime,
    /// Treadmill force on belt (N) and power output (W).
    ForcePower,
    /// Cross trainer step rate and average step rate.
    StepRate,
    StrideCount,
    /// Resistance level at this resolution.
    Resistance(f64),
    Power,
    AveragePower,
    /// Rower stroke rate (0.5 /min) and stroke count.
    Stroke,
    AverageStrokeRate,
    Pace500m,
    AveragePace500m,
    Cadence,
    AverageCadence,
}

use Field::*;

const TREADMILL: &[(u32, Field)] = &[
    (0, Speed),
    (1, AverageSpeed),
    (2, Distance),
    (3, InclineRamp),
    (4, Elevation(0.1)),
    (5, Pace("instantaneous_pace")),
    (6, Pace("average_pace")),
    (7, Energy),
    (8, HeartRate),
    (9, Met),
    (10, ElapsedTime),
    (11, RemainingTime),
    (12, ForcePower),
];

const CROSS_TRAINER: &[(u32, Field)] = &[
    (0, Speed),
    (1, AverageSpeed),
    (2, Distance),
    (3, StepRate),
    (4, StrideCount),
    (5, Elevation(1.0)),
    (6, InclineRamp),
    (7, Resistance(0.1)),
    (8, Power),
    (9, AveragePower),
    (10, Energy),
    (11, HeartRate),
    (12, Met),
    (13, ElapsedTime),
    (14, RemainingTime),
];

const ROWER: &[(u32, Field)] = &[
    (0, Stroke),
    (1, AverageStrokeRate),
    (2, Distance),
    (3, Pace500m),
    (4, AveragePace500m),
    (5, Power),
    (6, AveragePower),
    (7, Resistance(1.0)),
    (8, Energy),
    (9, HeartRate),
    (10, Met),
    (11, ElapsedTime),
    (12, RemainingTime),
];

const INDOOR_BIKE: &[(u32, Field)] = &[
    (0, Speed),
    (1, AverageSpeed),
    (2, Cadence),
    (3, AverageCadence),
    (4, Distance),
    (5, Resistance(1.0)),
    (6, Power),
    (7, AveragePower),
    (8, Energy),
    (9, HeartRate),
    (10, Met),
    (11, ElapsedTime),
    (12, RemainingTime),
];

/// Treadmill Data 0x2ACD.
pub fn treadmill(r: &mut Reader, out: &mut Decoded, options: &Options) -> Result<(), GattError> {
    let flags = r.u16("flags")? as u32;
    machine(r, out, flags, TREADMILL, options)
}

/// Cross Trainer Data 0x2ACE; its flags are 24 bits, bit 15 the direction.
pub fn cross_trainer(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u24("flags")?;
    if bit(flags, 15) {
        out.attribute("movement_direction", "backward");
    }
    machine(r, out, flags, CROSS_TRAINER, &Options::default())
}

/// Rower Data 0x2AD1.
pub fn rower(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u16("flags")? as u32;
    machine(r, out, flags, ROWER, &Options::default())
}

/// Indoor Bike Data 0x2AD2.
pub fn indoor_bike(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let flags = r.u16("flags")? as u32;
    machine(r, out, flags, INDOOR_BIKE, &Options::default())
}

fn machine(
    r: &mut Reader,
    out: &mut Decoded,
    flags: u32,
    table: &[(u32, Field)],
    options: &Options,
) -> Result<(), GattError> {
    let more_data = bit(flags, 0);
    if more_data {
        out.continuation = Continuation::MoreData;
    }
    for &(b, field) in table {
        let present = if b == 0 { !more_data } else { bit(flags, b) };
        if present {
            read(r, out, field, options)?;
        }
    }
    Ok(())
}

fn read(
    r: &mut Reader,
    out: &mut Decoded,
    field: Field,
    options: &Options,
) -> Result<(), GattError> {
    const NA16: f64 = 0x7FFF as f64;
    match field {
        Speed => {
            let v = r.u16("instantaneous speed")? as f64;
            out.value("instantaneous_speed", "activity.speed", v * 0.01, "km/h");
        }
        AverageSpeed => {
            let v = r.u16("average speed")? as f64;
            out.value("average_speed", "activity.average_speed", v * 0.01, "km/h");
        }
        Distance => {
            let v = r.u24("total distance")? as f64;
            out.value("total_distance", "activity.distance", v, "m");
        }
        InclineRamp => {
            let incline = r.i16("inclination")? as f64;
            let ramp = r.i16("ramp angle setting")? as f64;
            out.value_or_absent("inclination", "activity.incline", incline, NA16, 0.1, "%");
            out.value_or_absent("ramp_angle", "activity.ramp_angle", ramp, NA16, 0.1, "deg");
        }
        Elevation(res) => {
            let gain = r.u16("positive elevation gain")? as f64;
            let loss = r.u16("negative elevation gain")? as f64;
            out.value(
                "positive_elevation_gain",
                "activity.elevation_gain",
                gain * res,
                "m",
            );
            out.value(
                "negative_elevation_gain",
                "activity.elevation_loss",
                loss * res,
                "m",
            );
        }
        Pace(name) => {
            // Uncertain across revisions, so an attribute, not a reading.
            let raw = r.uint(options.pace_bytes, name)? as f64;
            out.attribute(&format!("{name}_km_per_min"), raw * 0.1);
        }
        Energy => {
            let total = r.u16("total energy")? as f64;
            let per_hour = r.u16("energy per hour")? as f64;
            let per_minute = r.u8("energy per minute")? as f64;
            out.value_or_absent(
                "total_energy",
                "activity.energy",
                total,
                65535.0,
                1.0,
                "kcal",
            );
            out.value_or_absent(
                "energy_per_hour",
                "activity.energy_per_hour",
                per_hour,
                65535.0,
                1.0,
                "kcal/h",
            );
            out.value_or_absent(
                "energy_per_minute",
                "activity.energy_per_minute",
                per_minute,
                255.0,
                1.0,
                "kcal/min",
            );
        }
        HeartRate => {
            let v = r.u8("heart rate")? as f64;
            out.value("heart_rate", "vital.heart_rate", v, "/min");
        }
        Met => {
            let v = r.u8("metabolic equivalent")? as f64;
            out.value("metabolic_equivalent", "activity.met", v * 0.1, "{MET}");
        }
        ElapsedTime => {
            let v = r.u16("elapsed time")? as f64;
            out.value("elapsed_time", "activity.elapsed_time", v, "s");
        }
        RemainingTime => {
            let v = r.u16("remaining time")? as f64;
            out.value("remaining_time", "activity.remaining_time", v, "s");
        }
        ForcePower => {
            let force = r.i16("force on belt")? as f64;
            let power = r.i16("power output")? as f64;
            out.value_or_absent("force_on_belt", "activity.force", force, NA16, 1.0, "N");
            out.value_or_absent("power_output", "activity.power", power, NA16, 1.0, "W");
        }
        StepRate => {
            let rate = r.u16("step per minute")? as f64;
            let avg = r.u16("average step rate")? as f64;
            out.value("step_per_minute", "activity.step_rate", rate, "/min");
            out.value(
                "average_step_rate",
                "activity.average_step_rate",
                avg,
                "/min",
            );
        }
        StrideCount => {
            let v = r.u16("stride count")? as f64;
            out.value("stride_count", "activity.stride_count", v * 0.1, "{#}");
        }
        Resistance(res) => {
            let v = r.i16("resistance level")? as f64;
            out.value(
                "resistance_level",
                "activity.resistance_level",
                v * res,
                "1",
            );
        }
        Power => {
            let v = r.i16("instantaneous power")? as f64;
            out.value_or_absent("instantaneous_power", "activity.power", v, NA16, 1.0, "W");
        }
        AveragePower => {
            let v = r.i16("average power")? as f64;
            out.value_or_absent("average_power", "activity.average_power", v, NA16, 1.0, "W");
        }
        Stroke => {
            let rate = r.u8("stroke rate")? as f64;
            let count = r.u16("stroke count")? as f64;
            out.value("stroke_rate", "activity.stroke_rate", rate * 0.5, "/min");
            out.value("stroke_count", "activity.stroke_count", count, "{#}");
        }
        AverageStrokeRate => {
            let v = r.u8("average stroke rate")? as f64;
            out.value(
                "average_stroke_rate",
                "activity.average_stroke_rate",
                v * 0.5,
                "/min",
            );
        }
        Pace500m => {
            let v = r.u16("instantaneous pace")? as f64;
            out.value("instantaneous_pace", "activity.pace_500m", v, "s");
        }
        AveragePace500m => {
            let v = r.u16("average pace")? as f64;
            out.attribute("average_pace_500m_s", v);
        }
        Cadence => {
            let v = r.u16("instantaneous cadence")? as f64;
            out.value("instantaneous_cadence", "activity.cadence", v * 0.5, "/min");
        }
        AverageCadence => {
            let v = r.u16("average cadence")? as f64;
            out.value(
                "average_cadence",
                "activity.average_cadence",
                v * 0.5,
                "/min",
            );
        }
    }
    Ok(())
}

/// Training Status 0x2AD3: the status, and the device's text if sent.
pub fn training_status(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    const STATUS: [&str; 16] = [
        "other",
        "idle",
        "warming_up",
        "low_intensity_interval",
        "high_intensity_interval",
        "recovery_interval",
        "isometric",
        "heart_rate_control",
        "fitness_test",
        "speed_outside_control_region_low",
        "speed_outside_control_region_high",
        "cool_down",
        "watt_control",
        "manual_mode",
        "pre_workout",
        "post_workout",
    ];
    let flags = r.u8("flags")? as u32;
    let status = r.u8("training status")?;
    out.attribute(
        "training_status",
        STATUS.get(status as usize).copied().unwrap_or("reserved"),
    );
    if bit(flags, 0) || bit(flags, 1) {
        let text = r.take(r.remaining(), "training status string")?;
        out.attribute("training_status_text", String::from_utf8_lossy(text).trim());
    }
    Ok(())
}

/// Fitness Machine Status 0x2ADA: an op code and its parameter.
pub fn machine_status(r: &mut Reader, out: &mut Decoded, _: &Options) -> Result<(), GattError> {
    let op = r.u8("op code")?;
    let (name, parameter): (&str, Option<serde_json::Value>) = match op {
        0x01 => ("reset", None),
        0x02 => {
            let how = match r.u8("control information")? {
                1 => "stopped",
                2 => "paused",
                _ => "reserved",
            };
            ("stopped_or_paused_by_user", Some(how.into()))
        }
        0x03 => ("stopped_by_safety_key", None),
        0x04 => ("started_or_resumed_by_user", None),
        0x05 => {
            let kmh = r.u16("new target speed")? as f64 * 0.01;
            ("target_speed_changed_kmh", Some(kmh.into()))
        }
        0x06 => {
            let pct = r.i16("new target incline")? as f64 * 0.1;
            ("target_incline_changed_pct", Some(pct.into()))
        }
        0x07 => {
            let level = r.i16("new target resistance")? as f64 * 0.1;
            ("target_resistance_changed", Some(level.into()))
        }
        0x08 => {
            let watts = r.i16("new target power")?;
            ("target_power_changed_w", Some(watts.into()))
        }
        0x09 => {
            let bpm = r.u8("new target heart rate")?;
            ("target_heart_rate_changed", Some(bpm.into()))
        }
        0x0A => {
            let kcal = r.u16("new targeted expended energy")?;
            ("targeted_expended_energy_changed_kcal", Some(kcal.into()))
        }
        0x0B => {
            let steps = r.u16("new targeted number of steps")?;
            ("targeted_steps_changed", Some(steps.into()))
        }
        0x0C => {
            let strides = r.u16("new targeted number of strides")?;
            ("targeted_strides_changed", Some(strides.into()))
        }
        0x0D => {
            let m = r.u24("new targeted distance")?;
            ("targeted_distance_changed_m", Some(m.into()))
        }
        0x0E => {
            let s = r.u16("new targeted training time")?;
            ("targeted_training_time_changed_s", Some(s.into()))
        }
        0x0F..=0x11 => {
            let zones = [2, 3, 5][(op - 0x0F) as usize];
            let mut times = Vec::new();
            for _ in 0..zones {
                times.push(serde_json::Value::from(r.u16("heart rate zone time")?));
            }
            ("targeted_time_in_zones_changed_s", Some(times.into()))
        }
        0x12 => {
            let wind = r.i16("wind speed")? as f64 * 0.001;
            let grade = r.i16("grade")? as f64 * 0.01;
            let crr = r.u8("rolling resistance coefficient")? as f64 * 0.0001;
            let cw = r.u8("wind resistance coefficient")? as f64 * 0.01;
            let p = serde_json::json!({"wind_speed_ms": wind, "grade_pct": grade, "crr": crr, "cw": cw});
            ("indoor_bike_simulation_changed", Some(p))
        }
        0x13 => {
            let mm = r.u16("new wheel circumference")? as f64 * 0.1;
            ("wheel_circumference_changed_mm", Some(mm.into()))
        }
        0x14 => {
            let status = match r.u8("spin down status")? {
                1 => "requested",
                2 => "success",
                3 => "error",
                4 => "stop_pedaling",
                _ => "reserved",
            };
            ("spin_down_status", Some(status.into()))
        }
        0x15 => {
            let rpm = r.u16("new targeted cadence")? as f64 * 0.5;
            ("targeted_cadence_changed", Some(rpm.into()))
        }
        0xFF => ("control_permission_lost", None),
        _ => {
            // Reserved op codes may carry parameters we cannot know.
            r.take(r.remaining(), "parameter")?;
            ("reserved", Some(op.into()))
        }
    };
    out.attribute("machine_status", name);
    if let Some(p) = parameter {
        out.attribute("machine_status_parameter", p);
    }
    Ok(())
}
