//! Framing tests: every framing fed in every chunking, resynchronising
//! after garbage and corrupt frames.

use super::*;

fn spec(toml_text: &str) -> FrameSpec {
    toml::from_str::<toml::Table>(toml_text).unwrap();
    #[derive(Deserialize)]
    struct W {
        frame: FrameSpec,
    }
    toml::from_str::<W>(toml_text).unwrap().frame
}

fn oks(frames: &[Framed]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter_map(|f| f.result.clone().ok())
        .collect()
}

fn texts(frames: &[Framed]) -> Vec<String> {
    oks(frames)
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

fn h(s: &str) -> Vec<u8> {
    parse_hex(s).unwrap()
}

/// Feeds `input` in every chunk size; all must give the same frames.
fn all_chunkings(spec: &FrameSpec, input: &[u8]) -> Vec<Framed> {
    let whole = Framer::new(spec).push(input);
    for chunk in 1..input.len() {
        let mut f = Framer::new(spec);
        let split: Vec<_> = input.chunks(chunk).flat_map(|c| f.push(c)).collect();
        assert_eq!(split, whole, "chunk size {chunk}");
    }
    whole
}

#[test]
fn lines_split_across_any_chunking() {
    let s = spec("[frame]\ntype = \"line\"\n");
    assert_eq!(
        texts(&all_chunkings(&s, b"A=1\r\nB=2\r\n\r\nC=3\n")),
        ["A=1", "B=2", "C=3"]
    );
}

#[test]
fn overlong_line_is_an_error_and_the_next_line_decodes() {
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\nmax_bytes = 16\n");
    let frames = Framer::new(&s).push(b"0123456789abcdefXYZ\nOK=1\n");
    assert_eq!(frames[0].result, Err(FrameError::TooLong { max: 16 }));
    assert_eq!(texts(&frames), ["OK=1"]);
}

#[test]
fn finish_flushes_an_unterminated_line() {
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\n");
    let mut f = Framer::new(&s);
    assert!(f.push(b"ID=1").is_empty());
    assert_eq!(texts(&f.finish()), ["ID=1"]);
}

#[test]
fn literal_delimiter_and_end_token_records() {
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\nend_token = \"over\"\n");
    let input = b"hei=172;wei=065.4;\npbf=021.3;over\nwei=1;over\n";
    assert_eq!(
        texts(&all_chunkings(&s, input)),
        ["hei=172;wei=065.4;\npbf=021.3;over", "wei=1;over"]
    );
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"#\"\n");
    assert_eq!(texts(&Framer::new(&s).push(b"a=1#b=2#")), ["a=1", "b=2"]);
}

#[test]
fn nmea_style_text_checksum() {
    let s = spec(
        "[frame]\ntype = \"line\"\n[frame.checksum]\ntype = \"xor\"\nseparator = \"*\"\nskip = 1\n",
    );
    let body = b"$HR,72";
    let x = body[1..].iter().fold(0u8, |a, b| a ^ b);
    let good = format!("$HR,72*{x:02X}\r\n");
    assert_eq!(texts(&Framer::new(&s).push(good.as_bytes())), ["$HR,72"]);
    let bad = Framer::new(&s).push(b"$HR,73*00\r\n");
    assert!(matches!(
        bad[0].result,
        Err(FrameError::ChecksumMismatch { .. })
    ));
    let missing = Framer::new(&s).push(b"$HR,73\r\n");
    assert!(matches!(
        missing[0].result,
        Err(FrameError::ChecksumMissing { .. })
    ));
}

fn stx() -> FrameSpec {
    spec("[frame]\ntype = \"stx_etx\"\nchecksum = \"xor\"\nmax_bytes = 64\n")
}

#[test]
fn stx_etx_frame_with_good_bcc() {
    assert_eq!(
        texts(&all_chunkings(
            &stx(),
            &h("024752502C53303030312C3033382E360337")
        )),
        ["GRP,S0001,038.6"]
    );
}

#[test]
fn stx_etx_bad_bcc_is_reported_and_next_frame_decodes() {
    let bad = h("024752502C53303030312C3033382E3603C8");
    let mut input = b"\xFFnoise".to_vec();
    input.extend(&bad);
    input.extend(h("024752502C53303030312C3033382E360337"));
    let frames = all_chunkings(&stx(), &input);
    assert_eq!(
        frames[0].result,
        Err(FrameError::ChecksumMismatch {
            sent: 0xC8,
            computed: 0x37
        })
    );
    assert_eq!(frames[0].raw, bad);
    assert_eq!(texts(&frames), ["GRP,S0001,038.6"]);
}

#[test]
fn stx_inside_a_partial_frame_resynchronises() {
    let mut input = vec![0x02, b'G', b'R'];
    input.extend(h("024752502C53303030312C3033382E360337"));
    let frames = Framer::new(&stx()).push(&input);
    assert_eq!(frames[0].result, Err(FrameError::Truncated));
    assert_eq!(texts(&frames), ["GRP,S0001,038.6"]);
}

fn sum8_header() -> FrameSpec {
    spec("[frame]\ntype = \"header\"\nmagic = \"AA 55\"\nlength = { offset = 2, size = 1, overhead = 4 }\nchecksum = { type = \"sum8\", from = 2 }\n")
}

#[test]
fn header_frames_with_sum8_after_garbage() {
    let mut input = h("00 AA 13 AA");
    input.extend(h("AA550521009E0001C5"));
    input.extend(h("AA550521FFD60002FD"));
    let frames = all_chunkings(&sum8_header(), &input);
    assert_eq!(
        oks(&frames),
        [h("AA550521009E0001C5"), h("AA550521FFD60002FD")]
    );
}

#[test]
fn a_corrupt_header_frame_does_not_swallow_the_next_one() {
    // Wrong checksum; a length field claiming more than max_bytes.
    let mut input = h("AA550521009E0001C6");
    input.extend(h("AA55FF"));
    input.extend(h("AA550521FFD60002FD"));
    let s = spec("[frame]\ntype = \"header\"\nmagic = \"AA 55\"\nlength = { offset = 2, overhead = 4 }\nchecksum = { type = \"sum8\", from = 2 }\nmax_bytes = 64\n");
    let frames = all_chunkings(&s, &input);
    assert!(matches!(
        frames[0].result,
        Err(FrameError::ChecksumMismatch {
            sent: 0xC6,
            computed: 0xC5
        })
    ));
    assert!(frames
        .iter()
        .any(|f| matches!(f.result, Err(FrameError::BadLength { .. }))));
    assert_eq!(oks(&frames), [h("AA550521FFD60002FD")]);
}

#[test]
fn header_frames_with_crc16_modbus_little_endian() {
    let s = spec("[frame]\ntype = \"header\"\nmagic = \"A5 5A\"\nlength = { offset = 2, overhead = 5 }\nchecksum = { type = \"crc16_modbus\", endian = \"little\" }\n");
    assert_eq!(
        oks(&all_chunkings(&s, &h("A55A07316E1403000000BDDA"))),
        [h("A55A07316E1403000000BDDA")]
    );
    assert!(Framer::new(&s).push(&h("A55A07316E1403000000BDDB"))[0]
        .result
        .is_err());
}

#[test]
fn id_card_sam_frames_with_u16_length_and_xor() {
    let s = spec("[frame]\ntype = \"header\"\nmagic = \"AA AA AA 96 69\"\nlength = { offset = 5, size = 2, overhead = 7 }\nchecksum = { type = \"xor\", from = 5 }\n");
    let input = h("AAAAAA96690003200122AAAAAA96690003200221");
    assert_eq!(oks(&all_chunkings(&s, &input)).len(), 2);
}

#[test]
fn length_prefixed_json() {
    let s = spec("[frame]\ntype = \"length_prefixed\"\nsize = 2\n");
    let input = h("00307B226974656D223A227369745F7570735F316D696E222C22736964223A225330303031222C22636F756E74223A33327D");
    let frames = all_chunkings(&s, &input);
    assert_eq!(
        texts(&frames),
        ["{\"item\":\"sit_ups_1min\",\"sid\":\"S0001\",\"count\":32}"]
    );
}

#[test]
fn fixed_length_frames_with_sync() {
    let s = spec("[frame]\ntype = \"fixed\"\nlength = 4\nsync = \"7E\"\nchecksum = { type = \"xor\", from = 1 }\n");
    let frames = all_chunkings(&s, &h("00 7E 01 02 03 FF 7E 05 06 03"));
    assert_eq!(oks(&frames), [h("7E010203"), h("7E050603")]);
    assert!(frames.iter().any(|f| f.result.is_err()) || frames.len() == 2);
}

#[test]
fn csafe_unstuffs_and_checks() {
    let s = spec("[frame]\ntype = \"csafe\"\n");
    assert_eq!(oks(&all_chunkings(&s, &h("F19191F2"))), [h("91")]);
    assert_eq!(
        oks(&all_chunkings(&s, &h("F11A0305F30100EDF2"))),
        [h("1A0305F100")]
    );
    assert!(Framer::new(&s).push(&h("F19190F2"))[0].result.is_err());
    assert!(matches!(
        Framer::new(&s).push(&h("F1F309F2"))[0].result,
        Err(FrameError::BadStuffing(9))
    ));
}

#[test]
fn modbus_responses_and_exceptions() {
    let s = FrameSpec::ModbusRtu;
    let frames = all_chunkings(&s, &h("01030400FA000CDA07 018302C0F1"));
    assert_eq!(oks(&frames), [h("01030400FA000CDA07"), h("018302C0F1")]);
    let frames = Framer::new(&s).push(&h("FF 01030400FA000CDA08 01030400FA000CDA07"));
    assert_eq!(oks(&frames), [h("01030400FA000CDA07")]);
}

#[test]
fn an_echoed_modbus_request_does_not_swallow_the_replies() {
    let frames = all_chunkings(
        &FrameSpec::ModbusRtu,
        &h("010300000002C40B 01030400FA000CDA07 010300000002C40B 01030400FA000CDA07"),
    );
    assert_eq!(
        oks(&frames),
        [h("01030400FA000CDA07"), h("01030400FA000CDA07")]
    );
    assert!(frames
        .iter()
        .all(|f| f.result.is_ok() || f.result == Err(FrameError::Echo)));
}

#[test]
fn not_ready_lines_stand_alone_beside_end_token_records() {
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\nend_token = \"over\"\n");
    let mut f = Framer::new(&s).ignoring(&["measing".to_string()]);
    assert_eq!(
        texts(&f.push(b"measing\nhei=172;\nwei=65.4;over\n")),
        ["measing", "hei=172;\nwei=65.4;over"]
    );
}

#[test]
fn cr_delimited_lines_tolerate_crlf() {
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"cr\"\n");
    let frames = Framer::new(&s).push(b"A=1\r\nB=2\r\n");
    assert_eq!(texts(&frames), ["A=1", "B=2"]);
    assert_eq!(frames.len(), 2);
}

#[test]
fn a_multi_byte_delimiter_resynchronises_after_an_overlong_line() {
    let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"END\"\nmax_bytes = 8\n");
    assert_eq!(
        texts(&all_chunkings(&s, b"0123456789abcdefENDa=1END")),
        ["a=1"]
    );
}

#[test]
fn fixed_frames_without_sync_realign_after_a_lost_byte() {
    let s = spec("[frame]\ntype = \"fixed\"\nlength = 3\nchecksum = { type = \"xor\" }\n");
    // 01 02 03 is good (01^02 = 03); a stray byte shifts the stream.
    let frames = Framer::new(&s).push(&h("FF 01 02 03 01 02 03"));
    assert_eq!(oks(&frames), [h("010203"), h("010203")]);
}

/// Frame length and garbage cost time in their length, not its square:
/// before, a 1 MiB STX/ETX frame took over a minute and a 2 MiB random
/// capture over 20 s through the Modbus resync. These sizes would hang the
/// suite for hours if either turned quadratic again.
#[test]
fn long_frames_and_long_garbage_are_linear() {
    let big = 4 * 1024 * 1024;
    let stx = spec(&format!(
        "[frame]\ntype = \"stx_etx\"\nmax_bytes = {}",
        big + 16
    ));
    let mut input = vec![0x02];
    input.extend(std::iter::repeat_n(b'A', big));
    input.push(0x03);
    let mut framer = Framer::new(&stx);
    let frames: Vec<Framed> = input.chunks(4096).flat_map(|c| framer.push(c)).collect();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].result.as_ref().map(Vec::len), Ok(big));

    let mut rng = fastrand::Rng::with_seed(7);
    let garbage: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(big).collect();
    for text in [
        "[frame]\ntype = \"modbus_rtu\"",
        "[frame]\ntype = \"header\"\nmagic = \"AA 55\"\nlength = { offset = 2, overhead = 4 }\nchecksum = { type = \"sum8\", from = 2 }\nmax_bytes = 64",
    ] {
        let mut framer = Framer::new(&spec(text));
        let whole = framer.push(&garbage);
        assert!(whole.len() < big / 8, "{text}: {} frames from noise", whole.len());
        assert!(framer.state.buf.len() <= 256, "{text}: at most one frame kept");
    }
}
