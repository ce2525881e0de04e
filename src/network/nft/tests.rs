use super::*;

#[test]
fn attributes_are_padded_and_nested_with_the_flag() {
    let mut e = Enc::default();
    e.nest(4, |e| {
        e.str(1, "ab").be32(2, 0x0102_0304);
    });
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[20u8, 0, 4, 0x80][..],        // nested, length covers the padded children
        &[7, 0, 1, 0, b'a', b'b', 0, 0], // "ab\0", length 7, padded to 8
        &[8, 0, 2, 0, 1, 2, 3, 4],       // big-endian
    ]
    .concat();
    assert_eq!(e.0, want);
    let outer: Vec<_> = attrs(&e.0).collect();
    assert_eq!(outer.len(), 1);
    assert_eq!(outer[0].0, 4, "the nested flag is masked off");
    let inner: Vec<_> = attrs(outer[0].1).collect();
    assert_eq!(inner, vec![(1, &b"ab\0"[..]), (2, &[1u8, 2, 3, 4][..])]);
}

#[test]
fn a_prefix_match_loads_masks_and_compares() {
    let mut e = Enc::default();
    e.prefix(IP_SADDR, "10.88.16.0/20".parse().unwrap(), false);
    type Expr = (String, Vec<(u16, Vec<u8>)>);
    let exprs: Vec<Expr> = attrs(&e.0)
        .map(|(_, el)| {
            let mut it = attrs(el);
            let name = it.next().unwrap().1;
            let data = attrs(it.next().unwrap().1).map(|(t, v)| (t, v.to_vec())).collect();
            (String::from_utf8(name.to_vec()).unwrap(), data)
        })
        .collect();
    let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["payload\0", "bitwise\0", "cmp\0"]);
    assert_eq!(exprs[0].1[2], (3, vec![0, 0, 0, 12]), "offset of ip saddr");
    let mask = attrs(&exprs[1].1[3].1).next().unwrap().1.to_vec();
    assert_eq!(mask, [255, 255, 240, 0]);
    assert_eq!(exprs[2].1[1], (2, vec![0, 0, 0, 1]), "!=");
    assert_eq!(attrs(&exprs[2].1[2].1).next().unwrap().1, [10, 88, 16, 0]);
}

#[test]
fn a_batch_frames_its_messages() {
    let mut b = Batch::new("test", "outpost");
    b.push(DELTABLE, 0, "delete table", |e| b_table(e, "outpost"));
    let msgs: Vec<_> = messages(&b.buf.0).collect();
    assert_eq!(msgs.len(), 2);
    let (ty, flags, seq, payload) = msgs[0];
    assert_eq!((ty, flags, seq), (NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0));
    assert_eq!(payload, [0, 0, 0, 10], "res_id is the nftables subsystem, big-endian");
    let (ty, flags, seq, payload) = msgs[1];
    assert_eq!((ty, flags, seq), (10 << 8 | 2, NLM_F_REQUEST, 1));
    assert_eq!(&payload[..4], [NFPROTO_IPV4, 0, 0, 0]);
    assert_eq!(attrs(&payload[4..]).next(), Some((TABLE_NAME, &b"outpost\0"[..])));
}

#[test]
fn ids_round_trip_as_nft_comments() {
    let ud = userdata_comment("abc").unwrap();
    assert_eq!(ud, [0, 4, b'a', b'b', b'c', 0]);
    assert_eq!(comment(&ud).as_deref(), Some("abc"));
    // Another TLV first (nft may store more than the comment).
    assert_eq!(comment(&[1, 1, 9, 0, 2, b'x', 0]).as_deref(), Some("x"));
    assert_eq!(comment(&[0, 9, b'x']), None, "truncated");
    assert!(userdata_comment("").is_err());
    assert!(userdata_comment(&"a".repeat(128)).is_err());
}

#[test]
fn an_ack_with_an_error_carries_the_kernel_text() {
    let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0; 16]); // the request's header
    let mut tlvs = Enc::default();
    tlvs.str(1, "No such chain");
    payload.extend_from_slice(&tlvs.0);
    let e = check_ack("install: add rule", &payload).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT));
    let text = e.to_string();
    assert!(text.contains("install: add rule") && text.contains("(No such chain)"), "{text}");
    assert!(check_ack("x", &[0; 20]).is_ok());
}
