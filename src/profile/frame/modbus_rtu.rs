//! `modbus_rtu` framing: Modbus RTU responses (FC 01-04 with a byte count,
//! 05/06/15/16 echoes, exceptions), CRC-16/MODBUS sent low byte first, and
//! our own request echoed back by a 2-wire RS-485 line recognised and
//! skipped. The payload is the whole frame. The framing takes no settings.

use super::{checked_frame, BinaryChecksum, FrameError, Framed, SpecProblem, Step};
use crate::codec::checksum::{ChecksumKind, Endian};

/// The longest Modbus RTU frame (the standard's ADU limit).
pub const MAX_FRAME_BYTES: usize = 256;

pub fn problems() -> Vec<SpecProblem> {
    Vec::new()
}

/// What the buffer's start holds.
pub(super) fn step(buf: &[u8]) -> Step {
    if buf.len() < 3 {
        return Step::NeedMore;
    }
    let crc_ok = |frame: &[u8]| {
        let (body, crc) = frame.split_at(frame.len() - 2);
        ChecksumKind::Crc16Modbus.compute(body).to_le_bytes() == crc
    };
    // A read request echoed back by a 2-wire RS-485 adapter: skip it whole,
    // or its bytes would be taken for the start of a reply.
    let echo = buf.len() >= 8 && (0x01..=0x04).contains(&buf[1]) && crc_ok(&buf[..8]);
    let echoed = || Step::Frame {
        consumed: 8,
        framed: Framed::err(buf[..8].to_vec(), FrameError::Echo),
    };
    let length = match buf[1] {
        0x01..=0x04 if buf[2] as usize <= 250 => 3 + buf[2] as usize + 2,
        0x05 | 0x06 | 0x0F | 0x10 => 8,
        f if f & 0x80 != 0 && (f & 0x7F) <= 0x10 => 5,
        _ if echo => return echoed(),
        _ => return Step::Skip(1),
    };
    if buf.len() < length {
        return if echo { echoed() } else { Step::NeedMore };
    }
    if crc_ok(&buf[..length]) {
        let raw = buf[..length].to_vec();
        return Step::Frame {
            consumed: length,
            framed: Framed::ok(raw.clone(), raw),
        };
    }
    if echo {
        return echoed();
    }
    if buf.len() < 8 && (0x01..=0x04).contains(&buf[1]) {
        return Step::NeedMore; // may still turn out to be an echoed request
    }
    let checksum = BinaryChecksum {
        kind: ChecksumKind::Crc16Modbus,
        from: 0,
        endian: Endian::Little,
        tail: 0,
    };
    checked_frame(&buf[..length], Some(&checksum), 1)
}
