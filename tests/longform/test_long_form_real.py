"""Long-form transcription on the real Whisper base and the long fixture (LibriVox clips and synthesized
speakers, 3.5 min): equal to HF's long-form `generate`, subtitles on the true boundaries, both paths,
files with no speech, and a corrupt file among good ones."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import srt

from ctxprune.data.audio import load_audio
from ctxprune.data.long_fixture import boundary_error, build_long_fixture
from ctxprune.eval.librivox import LIBRIVOX_DIR as LIBRIVOX
from ctxprune.eval.librivox import word_error_rate
from ctxprune.longform.audio_stream import AudioStream
from ctxprune.longform.decoder import GREEDY_LONG_FORM, Job, LongFormDecoder
from ctxprune.longform.sources import StreamedMel
from tests.longform.test_decoder import hf_long_form

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_long_fixture(tmp_path_factory.mktemp("long"), "en")


@pytest.fixture(scope="module")
def transcriber():
    from ctxprune.transcriber import Transcriber

    return Transcriber()


def test_greedy_long_form_equals_hf(fixture, transcriber):
    stack = transcriber.stack
    decoder = LongFormDecoder(stack.pipeline, options=GREEDY_LONG_FORM)
    (job,) = decoder.run([Job(0, StreamedMel(AudioStream(fixture.audio)), "en")])
    ours = [(s.start, s.end, s.tokens) for s in job.spans]
    expected = hf_long_form(stack.loaded.model, load_audio(fixture.audio), "en", 224)
    assert len(ours) > 20
    assert [t for *_, t in ours] == [t for *_, t in expected]
    assert np.allclose([x[:2] for x in ours], [x[:2] for x in expected])


def test_srt_subtitles_sit_on_the_true_boundaries(fixture, tmp_path):
    cmd = [sys.executable, "-m", "ctxprune.cli", "transcribe", str(fixture.audio), "--output-format", "srt"]
    proc = subprocess.run([*cmd, "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    cues = list(srt.parse((tmp_path / "long-en.srt").read_text()))
    spans = [(c.start.total_seconds(), c.end.total_seconds()) for c in cues]
    error = boundary_error(spans, fixture)
    assert error["mean_error_s"] < 0.5, error
    wer = word_error_rate([fixture.reference()], [" ".join(c.content for c in cues)])
    assert wer < 0.2, wer


def test_vad_batched_path_transcribes_and_times_the_fixture(fixture, transcriber):
    (result,) = transcriber.transcribe([fixture.audio], language="en", vad=True)
    assert word_error_rate([fixture.reference()], [result.text]) < 0.2
    assert boundary_error([(s.start, s.end) for s in result.segments], fixture)["mean_error_s"] < 0.5
    assert result.language == "en" and result.duration == pytest.approx(fixture.duration, abs=0.01)


@pytest.mark.parametrize("vad", [False, True])
def test_no_speech_gives_an_empty_transcript_and_a_note(transcriber, tmp_path, vad):
    noise = np.random.default_rng(0).normal(0, 1e-3, 16000 * 45).astype(np.float32)  # -60 dBFS, 45 s
    sf.write(tmp_path / "quiet.flac", noise, 16000)
    (result,) = transcriber.transcribe([tmp_path / "quiet.flac"], language="en", vad=vad)
    assert result.text == "" and result.segments == [] and result.error is None
    assert "no speech" in result.note


def test_a_corrupt_file_among_good_ones_is_reported_alone(fixture, transcriber, tmp_path):
    audio = load_audio(fixture.audio)[: 16000 * 60]
    sf.write(tmp_path / "broken.flac", audio, 16000)
    data = bytearray((tmp_path / "broken.flac").read_bytes())
    half = len(data) // 2
    data[half:] = np.random.default_rng(1).integers(0, 256, len(data) - half, dtype=np.uint8).tobytes()
    (tmp_path / "broken.flac").write_bytes(bytes(data))
    sf.write(tmp_path / "good.flac", audio[: 16000 * 20], 16000)
    broken, good = transcriber.transcribe([tmp_path / "broken.flac", tmp_path / "good.flac"], language="en")
    assert "broken.flac" in broken.error and good.error is None
    assert "truncated" in good.text.lower() and "dashwood" in good.text.lower()


def test_json_output_keeps_segments_with_gates(fixture, tmp_path):
    from ctxprune.paths import ARTIFACTS

    gates = ARTIFACTS / "gates" / "decoder-flops-0.5-static"
    cmd = [sys.executable, "-m", "ctxprune.cli", "transcribe", str(fixture.audio), "--vad", "--json"]
    proc = subprocess.run([*cmd, "--gates", str(gates)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    shares = [s["gates"]["flops_executed_share"] for s in record["segments"]]
    ran = record["segments"][0]["gates"]["ran"]
    assert shares and all(0.3 < x < 1.0 for x in shares)  # decoder gates only: the encoder is most FLOPs
    assert all(name.startswith("enc.") for name in ran[:12]) and len(ran) < 30


def test_a_long_file_is_streamed_not_loaded(transcriber, tmp_path):
    """Quiet files of 6 and 12 minutes with speech near the start and the end: the speech is found at its
    place, and the audio held at once does not grow with the file (it stays well below the 12-minute
    file's 46 MB of samples)."""
    import tracemalloc

    clip = load_audio(sorted(LIBRIVOX.glob("*.wav"))[0])
    rng = np.random.default_rng(0)
    peaks = []
    for minutes in (6, 12):
        path = tmp_path / f"{minutes}.flac"
        with sf.SoundFile(path, "w", 16000, 1, format="FLAC") as f:
            for minute in range(minutes):
                quiet = rng.normal(0, 1e-3, 16000 * 60).astype(np.float32)
                if minute in (1, minutes - 2):
                    quiet[16000 * 5 : 16000 * 5 + len(clip)] += clip
                f.write(quiet)
        tracemalloc.start()
        (result,) = transcriber.transcribe([path], language="en", vad=True)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        starts = [s.start for s in result.segments if "dashwood" in s.text.lower()]
        assert (
            len(starts) == 2 and abs(starts[0] - 65) < 1.0 and abs(starts[1] - (minutes - 2) * 60 - 5) < 1.0
        )
    assert peaks[1] < 1.2 * peaks[0] and peaks[1] < 0.6 * 16000 * 720 * 4


def test_streamed_log_mel_holds_one_block(tmp_path):
    audio = np.random.default_rng(1).normal(0, 0.1, 16000 * 200).astype(np.float32)
    sf.write(tmp_path / "a.flac", audio, 16000)
    source = StreamedMel(AudioStream(tmp_path / "a.flac", block_seconds=10.0), block_seconds=60.0)
    for seek in range(0, source.total_frames, 2500):
        assert source.window(seek).shape == (80, 3000)
    assert source.samples.max_buffered <= 16000 * 70  # one log-mel block plus one read block
