//! Bodies read whole, never past a limit: a client's request, an upstream's answer, a model
//! server's reply — whatever delivers the pieces (warp, reqwest, a relayed stream).
//! [`read_to_limit`] refuses a body past its limit as soon as it passes it;
//! [`read_prefix`] keeps the first bytes of a body only shown in part (an error reply).

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The body broke off (the source's own error).
    #[error("{0}")]
    Broken(E),
}

/// Reads `body` whole, refusing it once it passes `limit` bytes. `expected` (a declared
/// length, 0 when unknown) sizes the buffer up front, capped by the limit. A body that comes
/// in one piece is not copied.
pub async fn read_to_limit<S, B, E>(body: S, limit: usize, expected: usize) -> Result<Bytes, ReadError<E>>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    futures_util::pin_mut!(body);
    let mut first: Option<Bytes> = None;
    let mut out: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(piece) = body.next().await {
        let mut piece = piece.map_err(ReadError::Broken)?;
        let n = piece.remaining();
        if n == 0 {
            continue;
        }
        len = len.saturating_add(n);
        if len > limit {
            return Err(ReadError::TooLarge { limit });
        }
        if let Some(out) = out.as_mut() {
            put(out, &mut piece);
            continue;
        }
        match first.take() {
            None => first = Some(piece.copy_to_bytes(n)),
            Some(earlier) => {
                let mut joined = BytesMut::with_capacity(expected.clamp(len, limit));
                joined.extend_from_slice(&earlier);
                put(&mut joined, &mut piece);
                out = Some(joined);
            }
        }
    }
    Ok(match (out, first) {
        (Some(out), _) => out.freeze(),
        (None, first) => first.unwrap_or_default(),
    })
}

/// The first `limit` bytes of `body`; a body that breaks off ends the read with what came.
pub async fn read_prefix<S, B, E>(body: S, limit: usize) -> Bytes
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    futures_util::pin_mut!(body);
    let mut out = BytesMut::new();
    while out.len() < limit {
        let Some(Ok(piece)) = body.next().await else {
            break;
        };
        let take = piece.remaining().min(limit - out.len());
        put(&mut out, &mut piece.take(take));
    }
    out.freeze()
}

fn put(out: &mut BytesMut, piece: &mut impl Buf) {
    while piece.has_remaining() {
        let part = piece.chunk();
        let n = part.len();
        out.extend_from_slice(part);
        piece.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_body_within_the_limit_is_read_whole_and_one_piece_is_not_copied() {
        let one: &'static [u8] = b"{\"a\":1}";
        let read = block_on(read_to_limit(pieces(&[one]), 7, 0)).unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr());
        let read = block_on(read_to_limit(pieces(&[b"ab", b"", b"cd", b"e"]), 5, 100)).unwrap();
        assert_eq!(&read[..], b"abcde");
        assert!(block_on(read_to_limit(pieces(&[]), 0, 0)).unwrap().is_empty());
    }

    #[test]
    fn a_body_past_the_limit_is_refused_and_a_broken_one_says_why() {
        match block_on(read_to_limit(pieces(&[b"abc", b"def"]), 5, 0)) {
            Err(ReadError::TooLarge { limit: 5 }) => {}
            other => panic!("{other:?}"),
        }
        let broken = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Err("reset".to_string())]);
        match block_on(read_to_limit(broken, 10, 0)) {
            Err(ReadError::Broken(why)) => assert_eq!(why, "reset"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ReadError::<String>::TooLarge { limit: 5 }.to_string(),
            "larger than the limit of 5 bytes"
        );
    }

    #[test]
    fn a_prefix_stops_at_the_limit_or_where_the_body_broke() {
        assert_eq!(
            &block_on(read_prefix(pieces(&[b"abc", b"def", b"ghi"]), 5))[..],
            b"abcde"
        );
        assert_eq!(&block_on(read_prefix(pieces(&[b"ab"]), 5))[..], b"ab");
        let broken = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Err("reset".to_string())]);
        assert_eq!(&block_on(read_prefix(broken, 5))[..], b"ab");
    }

    proptest! {
        #[test]
        fn any_split_reads_the_same_bytes(body in prop::collection::vec(any::<u8>(), 0..300), mut cuts in prop::collection::vec(0usize..300, 0..8), limit in 0usize..320) {
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([body.len()]) {
                let cut = cut.clamp(from, body.len());
                parts.push(Ok::<Bytes, String>(Bytes::copy_from_slice(&body[from..cut])));
                from = cut;
            }
            let read = block_on(read_to_limit(futures_util::stream::iter(parts.clone()), limit, 0));
            if body.len() <= limit {
                prop_assert_eq!(read.unwrap().to_vec(), body.clone());
            } else {
                let refused = matches!(read, Err(ReadError::TooLarge { .. }));
                prop_assert!(refused);
            }
            let prefix = block_on(read_prefix(futures_util::stream::iter(parts), limit));
            prop_assert_eq!(&prefix[..], &body[..body.len().min(limit)]);
        }
    }
}
