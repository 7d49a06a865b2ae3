import numpy as np
import pytest
import soundfile as sf

from ctxprune.errors import CtxpruneError
from ctxprune.eval.librivox import librivox_references, word_error_rate

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def transcriber():
    from ctxprune.transcriber import Transcriber

    return Transcriber()


def test_librivox_wer_is_at_most_0_15(transcriber):
    refs = librivox_references()
    paths = sorted(refs)
    results = transcriber.transcribe(paths, language="en", batch_size=5)
    wer = word_error_rate([refs[p] for p in paths], [r.text for r in results])
    assert wer <= 0.15, f"WER {wer:.3f}"
    assert all(r.language == "en" and r.duration > 2 for r in results)


def test_speech_across_the_30_s_mark_is_neither_lost_nor_doubled(transcriber, tmp_path):
    from ctxprune.data.audio import load_audio

    refs = librivox_references()
    clip = load_audio(sorted(refs)[0])  # ~7 s of speech, spoken twice: the second time across 30 s
    gap = np.zeros(16000 * 25, np.float32)
    sf.write(tmp_path / "long.wav", np.concatenate([clip, gap, clip]), 16000)
    (result,) = transcriber.transcribe([tmp_path / "long.wav"], language="en")
    assert result.duration > 30 and result.text.lower().count("dashwood") == 2
    second = [s for s in result.segments if "dashwood" in s.text.lower()][1]
    assert abs(second.start - (len(clip) / 16000 + 25)) < 1.0


def test_a_bad_file_does_not_stop_the_batch(transcriber, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    good = sorted(librivox_references())[1]
    results = transcriber.transcribe([bad, good], language="en")
    assert "not a readable audio file" in results[0].error
    assert "ill" in results[1].text.lower() and results[1].error is None


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"task": "summarize"}, "unknown task"), ({"language": "xx"}, "unknown language")]
)
def test_bad_options_are_refused(transcriber, kwargs, message):
    with pytest.raises(CtxpruneError, match=message):
        transcriber.transcribe([], **kwargs)
