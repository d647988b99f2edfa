use super::*;
use proptest::prelude::*;

fn ev(event: Option<&str>, data: &str) -> SseEvent {
    SseEvent {
        event: event.map(str::to_string),
        data: data.into(),
    }
}

fn parse_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut got = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        let cut = cut.clamp(from, bytes.len());
        got.extend(parser.push(&bytes[from..cut]));
        from = cut;
    }
    got.extend(parser.push(&bytes[from..]));
    got.extend(parser.finish());
    got
}

fn parse_whole(bytes: &[u8]) -> Vec<SseEvent> {
    parse_in_pieces(bytes, &[])
}

#[test]
fn parses_events_split_anywhere() {
    let stream = "event: ping\ndata: {\"type\":\"ping\"}\n\n: keep-alive\n\nevent: message_stop\r\ndata: {\"a\":\r\ndata:\"é\"}\r\n\r\ndata: [DONE]\r\r";
    let expected = vec![
        ev(Some("ping"), "{\"type\":\"ping\"}"),
        ev(Some("message_stop"), "{\"a\":\n\"é\"}"),
        ev(None, "[DONE]"),
    ];
    let bytes = stream.as_bytes();
    for size in 1..=bytes.len() {
        let mut parser = SseParser::new();
        let mut got = Vec::new();
        for piece in bytes.chunks(size) {
            got.extend(parser.push(piece));
        }
        got.extend(parser.finish());
        assert_eq!(got, expected, "pieces of {size} bytes");
    }
}

#[test]
fn fields_without_space_or_value_and_unknown_fields() {
    let mut parser = SseParser::new();
    let got = parser.push(b"\xEF\xBB\xBFdata:x\nid: 7\nretry: 10\nevent\ndata\n\nevent: lonely\n\n");
    assert_eq!(got, vec![ev(Some(""), "x\n")]);
    assert_eq!(parser.last_event_id(), "7");
    assert!(parser.finish().is_empty());
}

#[test]
fn a_byte_order_mark_is_skipped_only_at_the_start_even_cut_in_pieces() {
    let stream = b"\xEF\xBB\xBFdata: 1\n\n\xEF\xBB\xBFdata: 2\n\ndata: 3\n\n";
    for size in 1..=stream.len() {
        let mut parser = SseParser::new();
        let mut got = Vec::new();
        for piece in stream.chunks(size) {
            got.extend(parser.push(piece));
        }
        got.extend(parser.finish());
        // The second mark is part of a field name `\u{feff}data`, which is unknown.
        assert_eq!(got, vec![ev(None, "1"), ev(None, "3")], "pieces of {size} bytes");
    }
    assert_eq!(parse_whole(b"\xEF\xBB"), vec![]);
    assert_eq!(parse_whole(b"\xEFdata: x\n\n"), vec![]);
}

#[test]
fn an_unterminated_last_event_is_delivered_on_finish() {
    let mut parser = SseParser::new();
    assert!(parser.push(b"data: {\"x\":1}").is_empty());
    assert_eq!(parser.finish(), vec![ev(None, "{\"x\":1}")]);
    assert_eq!(
        parse_whole(b"data: {\"last\":true}\n"),
        vec![ev(None, "{\"last\":true}")]
    );
}

#[test]
fn comments_blank_lines_and_empty_data_dispatch_nothing() {
    assert!(parse_whole(b": only a comment\n\n\n\r\n\r").is_empty());
    assert!(parse_whole(b"data:\n\nevent: x\ndata: \n\n").is_empty());
    assert_eq!(parse_whole(b"data:\ndata:\n\n"), vec![ev(None, "\n")]);
}

#[test]
fn ids_and_retry_follow_the_spec() {
    let mut reader = SseReader::new();
    let mut ids = Vec::new();
    reader.feed(
        b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\nretry: 15x\nretry: 250\nid\ndata: c\n\n",
        &mut |e| ids.push(e.id.to_string()),
    );
    // An id with a NUL is ignored; an `id` line without a value clears it.
    assert_eq!(ids, ["1", "1", ""]);
    assert_eq!(reader.retry(), Some(250));
}

#[test]
fn multibyte_text_split_mid_character_survives() {
    let body = "data: {\"t\":\"héllo — ✓\"}\n\n";
    for size in 1..8 {
        let mut parser = SseParser::new();
        let mut got = Vec::new();
        for piece in body.as_bytes().chunks(size) {
            got.extend(parser.push(piece));
        }
        assert_eq!(got, vec![ev(None, "{\"t\":\"héllo — ✓\"}")]);
    }
}

#[test]
fn events_over_the_limit_are_dropped_and_counted() {
    let big = format!("data: {}\n\n", "x".repeat(100));
    let stream = format!(
        "data: small\n\n{big}data: a\ndata: {}\n\ndata: after\n\n",
        "y".repeat(70)
    );
    for size in [1, 7, 50, stream.len()] {
        let mut parser = SseParser::with_max_event(64);
        let mut got = Vec::new();
        for piece in stream.as_bytes().chunks(size) {
            got.extend(parser.push(piece));
        }
        got.extend(parser.finish());
        assert_eq!(got, vec![ev(None, "small"), ev(None, "after")], "pieces of {size}");
        assert_eq!(parser.dropped(), 2, "pieces of {size}");
    }
}

#[test]
fn a_single_line_event_is_read_in_place() {
    let chunk = b"event: e\ndata: {\"a\":1}\n\n";
    let mut reader = SseReader::new();
    let mut seen = Vec::new();
    reader.feed(chunk, &mut |e| seen.push(e.data.as_ptr() as usize));
    assert_eq!(seen, [chunk.as_ptr() as usize + b"event: e\ndata: ".len()]);
}

#[test]
fn the_first_event_of_a_piece() {
    assert_eq!(
        with_first_event(b"data: a\ndata: b\n\ndata: c\n\n", |e| e.data.to_vec()),
        Some(b"a\nb".to_vec())
    );
    assert_eq!(with_first_event(b": nothing\n\n", |e| e.data.to_vec()), None);
}

#[test]
fn the_framer_keeps_every_byte_and_cuts_at_blank_lines() {
    let stream = Bytes::from_static(b"data: 1\n\ndata: 2\r\n\r\nevent: x\rdata: 3\r\rdata: 4\n\ndata: tail");
    let mut framer = SseFramer::new();
    let mut pieces = framer.push(&stream);
    pieces.extend(framer.finish());
    let texts: Vec<&[u8]> = pieces.iter().map(|b| b.as_ref()).collect();
    assert_eq!(
        texts,
        [
            &b"data: 1\n\n"[..],
            b"data: 2\r\n\r\n",
            b"event: x\rdata: 3\r\r",
            b"data: 4\n\n",
            b"data: tail"
        ]
    );
    assert_eq!(
        pieces[0].as_ptr(),
        stream.as_ptr(),
        "an event inside one chunk is not copied"
    );
}

/// How one line of a generated stream ends.
fn line_end() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\r\n", "\r"])
}

/// Text without line breaks, with multi-byte characters and colons.
fn text() -> impl Strategy<Value = String> {
    "[a-z {}\":,é✓\\[\\]0-9]{0,12}"
}

#[derive(Debug, Clone)]
struct GenEvent {
    name: Option<String>,
    data: Vec<String>,
    comment: Option<String>,
    id: Option<String>,
    ends: Vec<&'static str>,
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        prop::option::of("[a-z_.]{0,8}"),
        prop::collection::vec(text(), 0..4),
        prop::option::of(text()),
        prop::option::of("[0-9a-z]{0,4}"),
        prop::collection::vec(line_end(), 8),
    )
        .prop_map(|(name, data, comment, id, ends)| GenEvent {
            name,
            data,
            comment,
            id,
            ends,
        })
}

/// A stream of events and what a reader must make of it.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<SseEvent>)> {
    (any::<bool>(), prop::collection::vec(gen_event(), 0..8)).prop_map(|(bom, events)| {
        let mut bytes = Vec::new();
        if bom {
            bytes.extend_from_slice(BOM);
        }
        let mut expected = Vec::new();
        for event in events {
            let mut ends = event.ends.iter();
            let mut line = |bytes: &mut Vec<u8>, text: &str| {
                let mut end = *ends.next().unwrap_or(&"\n");
                // A `\r` then an empty line ending in `\n` would read as one `\r\n`.
                if text.is_empty() && bytes.ends_with(b"\r") {
                    end = "\r";
                }
                bytes.extend_from_slice(text.as_bytes());
                bytes.extend_from_slice(end.as_bytes());
            };
            if let Some(comment) = &event.comment {
                line(&mut bytes, &format!(":{comment}"));
            }
            if let Some(name) = &event.name {
                line(&mut bytes, &format!("event: {name}"));
            }
            if let Some(id) = &event.id {
                line(&mut bytes, &format!("id:{id}"));
            }
            for data in &event.data {
                line(&mut bytes, &format!("data: {data}"));
            }
            line(&mut bytes, "");
            let data = event.data.join("\n");
            if !data.is_empty() {
                expected.push(SseEvent {
                    event: event.name.clone(),
                    data,
                });
            }
        }
        (bytes, expected)
    })
}

proptest! {
    #[test]
    fn any_chunking_of_a_stream_yields_its_events((bytes, expected) in stream(), mut cuts in prop::collection::vec(0usize..400, 0..12)) {
        cuts.sort_unstable();
        prop_assert_eq!(parse_whole(&bytes), expected.clone());
        prop_assert_eq!(parse_in_pieces(&bytes, &cuts), expected);
    }

    #[test]
    fn any_bytes_parse_the_same_however_they_are_cut(bytes in prop::collection::vec(prop::sample::select(b"data:event:id \r\n:x\xEF\xBB\xBF\xc3\xa9".to_vec()), 0..200), mut cuts in prop::collection::vec(0usize..200, 0..10)) {
        cuts.sort_unstable();
        prop_assert_eq!(parse_in_pieces(&bytes, &cuts), parse_whole(&bytes));
    }

    #[test]
    fn the_framer_cuts_whole_events_that_parse_as_the_stream_does((bytes, expected) in stream(), mut cuts in prop::collection::vec(0usize..400, 0..12)) {
        cuts.sort_unstable();
        let mut framer = SseFramer::new();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            let cut = cut.clamp(from, bytes.len());
            pieces.extend(framer.push(&Bytes::copy_from_slice(&bytes[from..cut])));
            from = cut;
        }
        pieces.extend(framer.finish());
        prop_assert_eq!(pieces.concat(), bytes.clone());
        // Each piece is whole: parsed on its own (a mark only at the very start), the pieces
        // give the stream's events.
        let mut events = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let piece: &[u8] = if i == 0 { piece.strip_prefix(BOM).unwrap_or(piece) } else { piece };
            // A piece may start with the `\n` of a `\r\n` the last piece ended in.
            let piece = if i > 0 && pieces[i - 1].ends_with(b"\r") { piece.strip_prefix(b"\n").unwrap_or(piece) } else { piece };
            events.extend(parse_whole(piece));
        }
        prop_assert_eq!(events, expected);
    }
}
