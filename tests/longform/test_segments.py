"""A decoded window cut into segments at timestamp pairs, and the seek that follows, as HF's long-form
`generate` (`_retrieve_segment`)."""

from ctxprune.longform.segments import split_window

B = 50364  # <|0.00|>


def test_pairs_cut_segments_and_an_unfinished_tail_moves_the_seek_back():
    tokens = [B, 10, 11, B + 100, B + 100, 12, B + 200, B + 200, 13, 14]  # the last text has no end
    piece = split_window(tokens, B, offset=30.0, window_frames=3000)
    assert [(s, e) for s, e, _ in piece.spans] == [(30.0, 32.0), (32.0, 34.0)]
    assert piece.spans[1][2] == [B + 100, 12, B + 200, B + 200]  # keeps its closing pair
    assert piece.advance == 400  # to the last pair: <|4.00|> is 400 frames


def test_a_single_timestamp_ending_finishes_the_window():
    tokens = [B, 10, B + 50, B + 50, 11, B + 120]
    piece = split_window(tokens, B, offset=0.0, window_frames=2500)
    assert [(s, e, t) for s, e, t in piece.spans] == [
        (0.0, 1.0, [B, 10, B + 50]),
        (1.0, 2.4, [B + 50, 11, B + 120]),
    ]
    assert piece.advance == 2500


def test_no_pair_is_one_segment_to_the_last_timestamp_or_the_window_end():
    piece = split_window([B + 10, 10, 11, B + 300], B, offset=5.0, window_frames=3000)
    assert piece.spans == [(5.0, 5.0 + 300 * 0.02, [B + 10, 10, 11, B + 300])] and piece.advance == 3000
    piece = split_window([10, 11], B, offset=0.0, window_frames=1999)
    assert piece.spans[0][1] == 999 * 0.02  # HF truncates the window's end to a whole timestamp
